# shellcheck shell=sh source-path=SCRIPTDIR
# Boot 5: the scratch volume holds someone's filesystem. The guard must refuse to key it, the boot goes on,
# and the data survives. Then the volume goes missing for the next boot.
. ./common.sh
facts data-volume
writers writers-data-volume
blkid -p -o value -s TYPE /dev/qubes_dom0/ephemeral >"$OUT/data-type" || true
mkdir -p /mnt/check
mount -o ro /dev/qubes_dom0/ephemeral /mnt/check && cat /mnt/check/precious.txt >"$OUT/precious" && umount /mnt/check
journalctl -b --no-pager -u systemd-cryptsetup@ephemeral.service >"$OUT/guard-journal" 2>&1 || true
lvremove -q -y qubes_dom0/ephemeral
