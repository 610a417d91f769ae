# shellcheck shell=sh source-path=SCRIPTDIR
# Boot 3: a new key. Canaries gone from every raw volume; then clean.
. ./common.sh
facts rebooted
keyscan 3-reboot
ls -A "$MP" >"$OUT/scratch-entries"
block=$(cat canary1-block)
# The old canary's blocks, read raw and through this boot's mapping: noise both ways.
python3 guest/scan.py markers "/dev/qubes_dom0/ephemeral@$((block * 4096))+1048576" \
    "/dev/mapper/ephemeral@$((block * 4096))+1048576" /dev/mapper/ephemeral-swap /dev/qubes_dom0/swap \
    /dev/qubes_dom0/root >"$OUT/scan-after.json"
ls -A /var/log/qubes >"$OUT/qubes-logs-after-reboot"
ls -A /var/lib/qubes-ephemeral/pools/ephemeral >"$OUT/pool-entries-after-reboot" 2>&1 || true
writers writers-rebooted
/usr/local/libexec/qubes-ephemeral/vm-initramfs status >"$OUT/kernels-after-reboot" 2>&1 || true
salt_apply ephemeral.clean clean-1.json
sha256sum /var/lib/qubes/vm-kernels/*/initramfs >"$OUT/kernels-after-clean"
qubes-prefs default_pool_volatile >"$OUT/default-pool-volatile-after-clean"
qvm-pool list >"$OUT/pools-after-clean"
salt_apply ephemeral.clean clean-2.json
facts cleaned
keyscan 3-clean
