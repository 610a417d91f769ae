# shellcheck shell=sh source-path=SCRIPTDIR
# Boot 5: the scratch volume holds someone's filesystem. The guard must refuse to key it, the boot goes on,
# and the data survives. Then the volume goes missing for the next boot.
. ./common.sh
facts data-volume
keyscan 5-guard-refused
# The audit tells it: the keying unit failed (the guard refused), so nothing it protects is trusted.
audit audit-guard-refused
writers writers-data-volume
blkid -p -o value -s TYPE /dev/qubes_dom0/ephemeral >"$OUT/data-type" || true
mkdir -p /mnt/check
mount -o ro /dev/qubes_dom0/ephemeral /mnt/check && cat /mnt/check/precious.txt >"$OUT/precious" && umount /mnt/check
journalctl -b --no-pager -u systemd-cryptsetup@ephemeral.service >"$OUT/guard-journal" 2>&1 || true
# The installed guard on devices that are someone's, by major:minor and dm's own names: nothing
# lets them pass, not even wipe_existing ("data").
cryptsetup open --key-file /etc/vault.key /dev/qubes_dom0/vault vault || true
lvcreate -q -y -L 8M -n vm-work-private qubes_dom0
lvcreate -q -y -L 8M -n pool00 qubes_dom0  # a plain volume, named as dom0's thin pool
lvcreate -q -y -s -L 8M -n root-snap qubes_dom0/root || true
lvcreate -q -y -L 8M -n looped qubes_dom0
loop=$(losetup -f --show /dev/qubes_dom0/looped || echo none)
lvcreate -q -y -L 8M -n vm-other-root qubes_dom0
dmsetup create qe-on-qube --table "0 16384 linear /dev/qubes_dom0/vm-other-root 0" || true
for device in /dev/qubes_dom0/root /dev/qubes_dom0/pool00 /dev/qubes_dom0/vm-work-private /dev/mapper/qubes_dom0-root-real \
    /dev/qubes_dom0/vault /dev/mapper/vault /dev/mapper/ephemeral-swap /dev/qubes_dom0/looped /dev/mapper/qe-on-qube \
    "$(findmnt -n -o SOURCE /)"; do
    rc=0
    message=$(/usr/local/libexec/qubes-ephemeral/refuse-data-scratch "$device" data 2>&1) || rc=$?
    printf '%s\t%s\t%s\n' "$device" "$rc" "$message" >>"$OUT/guard-cases"
done
# A device holding an LVM physical volume: dom0's own (its volume group is active), and one
# that is not in use: at boot, without wipe_existing, its label alone refuses it.
lvcreate -q -y -L 8M -n pv-holder qubes_dom0
pvcreate -q -y --config 'devices { scan_lvs = 1 }' /dev/qubes_dom0/pv-holder >"$OUT/pvcreate" 2>&1 || true
pv=$(pvs --noheadings -o pv_name --select vg_name=qubes_dom0 | tr -d ' ' | head -n 1)
for case in "$pv data" "$pv" "/dev/qubes_dom0/pv-holder"; do
    rc=0
    # shellcheck disable=SC2086 # the device and, for the first case, the allowed "data"
    message=$(/usr/local/libexec/qubes-ephemeral/refuse-data-scratch $case 2>&1) || rc=$?
    printf '%s\t%s\t%s\n' "$case" "$rc" "$message" >>"$OUT/guard-pv-cases"
done
lvremove -q -y qubes_dom0/pv-holder || true
dmsetup remove qe-on-qube || true
losetup -d "$loop" || true
lvremove -q -y qubes_dom0/root-snap qubes_dom0/vm-work-private qubes_dom0/pool00 qubes_dom0/looped \
    qubes_dom0/vm-other-root || true
cryptsetup close vault || true
lvremove -q -y qubes_dom0/ephemeral
