# shellcheck shell=sh source-path=SCRIPTDIR
# Boot 2: ephemeral storage is up. Check it, plant canaries, show the bare mount point is protected.
. ./common.sh
facts booted
systemctl status --no-pager qubes-ephemeral-format.service 'var-lib-qubes\x2dephemeral.mount' \
    systemd-cryptsetup@ephemeral.service >"$OUT/units-status" 2>&1 || true
journalctl -b --no-pager >"$OUT/journal" 2>&1 || true
keyscan 2-boot

# What dom0 keeps of a disposable elsewhere (docs/dom0-traces.md, "reported"): the audit names
# each file; --clear removes those and nothing else (look-alikes, a home whose ~/.cache leads elsewhere).
mkdir -p /home/user/.cache/xfce4/notifyd /home/user/.cache/sessions /var/lib/systemd/coredump \
    /srv/elsewhere/xfce4/notifyd /home/other /var/lib/qubes /var/log/libvirt/libxl
# qubes.xml says which qubes exist: the log of disp4242 (gone) is a remnant, that of work is not.
echo '<qubes><domains><domain class="AppVM"><properties><property name="name">work</property></properties></domain></domains></qubes>' >/var/lib/qubes/qubes.xml
echo "disp4242 started" >/var/log/libvirt/libxl/disp4242.log
echo "work started" >/var/log/libvirt/libxl/work.log
printf '#1700000000\nqvm-run disp4242 firefox\nls -l /srv\nqvm-run display-test xterm\n' >/root/.bash_history
echo "Qube disp4242 has started" >/home/user/.cache/xfce4/notifyd/log
echo "[CLIENT] disp4242 Firefox" >/home/user/.cache/sessions/xfwm4-2a7f.state
echo "a dump" >/var/lib/systemd/coredump/core.qubes-guid.0.1.2.3
ln -s /srv/elsewhere /home/other/.cache
echo "disp4242, not ours to clear" >/srv/elsewhere/xfce4/notifyd/log
echo "settings" >/home/user/.cache/xfce4/notifyd/other
sha256sum /srv/elsewhere/xfce4/notifyd/log /home/user/.cache/xfce4/notifyd/other /var/log/libvirt/libxl/work.log \
    >"$OUT/remnant-decoys.before"

# The audit: after the apply and a reboot, everything the description asks for is in place.
audit audit-after-reboot
rc=0
PYTHONPATH=$SITE qubes-ephemeral audit /srv/pillar/ephemeral.sls --clear all \
    >"$OUT/audit-cleared.txt" 2>"$OUT/audit-cleared.stderr" || rc=$?
echo "$rc" >"$OUT/audit-cleared.rc"
cp /root/.bash_history "$OUT/bash_history.cleared"
sha256sum /srv/elsewhere/xfce4/notifyd/log /home/user/.cache/xfce4/notifyd/other /var/log/libvirt/libxl/work.log \
    >"$OUT/remnant-decoys.after"
ls -A /home/user/.cache/xfce4/notifyd /home/user/.cache/sessions /var/lib/systemd/coredump /var/log/libvirt/libxl \
    >"$OUT/remnants-left"
# As an ordinary user: what it cannot read, it says so.
rc=0
su nobody -s /bin/sh -c "PYTHONPATH=$SITE qubes-ephemeral audit /srv/pillar/ephemeral.sls" \
    >"$OUT/audit-as-user.txt" 2>&1 || rc=$?
echo "$rc" >"$OUT/audit-as-user.rc"
keyscan 2-audit

# dom0's logs about qubes: on the scratch filesystem; the journal in memory only.
writers writers-booted
echo "$C4" >/var/log/qubes/guid.disp1234.log
logger "$C5"
journalctl --header >"$OUT/journal-header" 2>&1 || true

# Now the Qubes side in full: a pool on the scratch filesystem as the default
# for volatile volumes, and the /rw copy-on-write (the qubesd stand-in loaded
# the extension at boot; two VM kernels stand in for dom0's).
cp cow-pillar.sls /srv/pillar/ephemeral.sls
mkdir -p /var/lib/qubes/vm-kernels
cp -r kernels/6.6.1 /var/lib/qubes/vm-kernels/
salt_apply ephemeral apply-full-1.json
salt_apply ephemeral apply-full-2.json
keyscan 2-apply-full
ls -A /var/lib/qubes-ephemeral/pools/ephemeral >"$OUT/pool-entries"
qvm-pool info ephemeral >"$OUT/pool-info" 2>&1 || true
qubes-prefs default_pool_volatile >"$OUT/default-pool-volatile"
systemctl is-active qubes-ephemeral-vm-kernels.path >"$OUT/path-unit" || true
# A VM kernel installed later: the path unit must patch it, with no apply.
cp -r kernels/6.7.2 /var/lib/qubes/vm-kernels/
for _ in $(seq 60); do
    /usr/local/libexec/qubes-ephemeral/vm-initramfs status /var/lib/qubes/vm-kernels/6.7.2/initramfs | grep -q ': patched$' && break
    sleep 1
done
/usr/local/libexec/qubes-ephemeral/vm-initramfs status >"$OUT/kernels-after-install" 2>&1 || true

# Canary 1 in a file on the scratch filesystem; where it lies on the raw volume.
python3 -c "import sys; open(sys.argv[1], 'w').write((sys.argv[2] + '\n') * 256)" "$MP/canary.txt" "$C1"
sync
filefrag -v -b4096 "$MP/canary.txt" | awk '$1 == "0:" {print $4}' | tr -d '.:' >"$OUT/canary1-block"

# Canary 2 in tmpfs (swap-backed), then enough memory pressure to push it out to swap.
mkdir -p /mnt/t
mount -t tmpfs -o size=300M tmpfs /mnt/t
python3 -c "import sys; open('/mnt/t/c2', 'w').write((sys.argv[1] + '\n') * (150 * 1024 * 1024 // 33))" "$C2"
python3 - <<'PY' || true
meminfo = dict(line.split(":") for line in open("/proc/meminfo"))
available = int(meminfo["MemAvailable"].split()[0]) * 1024
hog = bytearray(b"\x01") * (available + 300 * 1024 * 1024)  # touched pages, not lazy zeros
PY
facts pressured

# Control: canary 3 on a persistent volume is found by the same scan.
mount /dev/qubes_dom0/root /mnt/persistent 2>/dev/null || true
python3 -c "import sys; open(sys.argv[1], 'w').write((sys.argv[2] + '\n') * 256)" /mnt/persistent/canary3.txt "$C3"
sync
# The canaries are there in the clear through the mappings, and only there.
block=$(cat "$OUT/canary1-block")
python3 guest/scan.py markers "/dev/mapper/ephemeral@$((block * 4096))+1048576" \
    "/dev/qubes_dom0/ephemeral@$((block * 4096))+1048576" /dev/mapper/ephemeral-swap /dev/qubes_dom0/swap \
    /dev/qubes_dom0/root >"$OUT/scan-before.json"

# With the scratch filesystem unmounted, nothing can be written to its mount point.
umount "$MP"
if touch "$MP/leak" 2>"$OUT/write-error"; then echo written >"$OUT/bare-write"; else echo refused >"$OUT/bare-write"; fi
ls -A "$MP" >"$OUT/bare-entries"
lsattr -d "$MP" | cut -d' ' -f1 >"$OUT/bare-attrs"
