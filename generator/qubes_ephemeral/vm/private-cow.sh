# shellcheck shell=sh
# qubes-ephemeral: put /rw of a forgetful disposable on a copy-on-write layer
# over its read-only private volume, kept on the volatile volume (xvdc), which
# dom0 keys afresh at every start. Sourced by the VM's initramfs: the patched
# /init of dom0-provided VM kernels, or the dracut module for qubes that boot
# their own kernel. It does nothing unless the private volume is read-only,
# which only the qubes-ephemeral qubesd extension makes it, for disposables.
#
#   qe_private_cow_setup        after the root copy-on-write (dmroot) is set
#                               up, before the root filesystem is mounted
#   qe_private_cow_fstab ROOT   once the root filesystem is mounted
#                               read-write at ROOT: /rw is mounted from
#                               /dev/mapper/dmprivate instead of the device
#
# If anything fails, /rw is left on the read-only device: the qube cannot
# write to it, and nothing is written to the persistent private volume.
# The device names can be changed for tests (loop devices stand in for them).

QE_PRIVATE=${QE_PRIVATE:-/dev/xvdb}        # the private volume, /rw
QE_ROOT_MAP=${QE_ROOT_MAP:-dmroot}         # the root copy-on-write mapping
QE_SPARE=${QE_SPARE:-/dev/xvdc3}           # free space on xvdc when root is writable
QE_MAP=dmprivate

qe_log() {
    echo "qubes-ephemeral: $*" >&2
}

# qe_sysfs DEVICE: the device's folder in /sys/class/block.
qe_sysfs() {
    echo "/sys/class/block/$(basename "$(readlink -f "$1")")"
}

# qe_sectors MAJOR:MINOR: size in 512-byte sectors.
qe_sectors() {
    cat "/sys/dev/block/$1/size"
}

qe_private_cow_setup() {
    qe_n=0
    while ! [ -b "$QE_PRIVATE" ] && [ "$qe_n" -lt 100 ]; do
        sleep 0.1
        qe_n=$((qe_n + 1))
    done
    [ -b "$QE_PRIVATE" ] || return 0                               # no private volume
    [ "$(cat "$(qe_sysfs "$QE_PRIVATE")/ro")" = 1 ] || return 0   # writable: not ours to change
    modprobe dm_snapshot 2>/dev/null
    qe_private=$(cat "$(qe_sysfs "$QE_PRIVATE")/dev")
    # shellcheck disable=SC2046 # the table's fields, split on purpose
    set -- $(dmsetup table "$QE_ROOT_MAP" 2>/dev/null)
    if [ "${3:-}" = snapshot ]; then
        # Root is read-only too: its copy-on-write takes the whole of xvdc2.
        # Nothing is written to it yet (root is not mounted): give it the
        # first half and /rw the second, then load the same table again.
        qe_len=$2 qe_origin=$4 qe_cow=$5 qe_persist=$6 qe_chunk=$7
        qe_total=$(qe_sectors "$qe_cow")
        qe_half=$((qe_total / 2 / 8 * 8))
        echo "0 $qe_half linear $qe_cow 0" | dmsetup create qe-cow-root || {
            qe_log "cannot split the copy-on-write space; /rw stays read-only"
            return 1
        }
        echo "0 $((qe_total - qe_half)) linear $qe_cow $qe_half" | dmsetup create qe-cow-private || {
            qe_log "cannot split the copy-on-write space; /rw stays read-only"
            dmsetup remove qe-cow-root
            return 1
        }
        qe_cow_root=$(dmsetup info -c --noheadings -o major,minor --separator : qe-cow-root)
        qe_table="0 $qe_len snapshot $qe_origin $qe_cow_root $qe_persist $qe_chunk"
        if ! dmsetup suspend "$QE_ROOT_MAP" || ! dmsetup reload "$QE_ROOT_MAP" --table "$qe_table"; then
            qe_log "cannot move the root copy-on-write; /rw stays read-only"
            dmsetup resume "$QE_ROOT_MAP" 2>/dev/null
            return 1
        fi
        dmsetup resume "$QE_ROOT_MAP" || {
            qe_log "cannot resume $QE_ROOT_MAP"
            return 1
        }
    elif [ -b "$QE_SPARE" ]; then
        # Root is writable: the initramfs left the rest of xvdc unused.
        qe_spare=$(cat "$(qe_sysfs "$QE_SPARE")/dev")
        echo "0 $(qe_sectors "$qe_spare") linear $qe_spare 0" | dmsetup create qe-cow-private || {
            qe_log "cannot use $QE_SPARE; /rw stays read-only"
            return 1
        }
    else
        qe_log "no copy-on-write space for the read-only private volume; /rw stays read-only"
        return 1
    fi
    qe_cow_private=$(dmsetup info -c --noheadings -o major,minor --separator : qe-cow-private)
    echo "0 $(qe_sectors "$qe_private") snapshot $qe_private $qe_cow_private N 16" | dmsetup create "$QE_MAP" || {
        qe_log "cannot create the /rw copy-on-write; /rw stays read-only"
        return 1
    }
    dmsetup mknodes "$QE_MAP"
    qe_log "/rw writes go to a copy-on-write layer on the volatile volume"
}

qe_private_cow_fstab() {
    [ -b "/dev/mapper/$QE_MAP" ] || return 0
    # Only the line that mounts the private volume on /rw; root's changes go
    # to its own copy-on-write, so the template's fstab is untouched.
    sed -i -e "s|^${QE_PRIVATE}\([[:space:]][[:space:]]*/rw[[:space:]]\)|/dev/mapper/$QE_MAP\1|" "$1/etc/fstab"
    if ! grep -q "^/dev/mapper/${QE_MAP}[[:space:]][[:space:]]*/rw[[:space:]]" "$1/etc/fstab"; then
        qe_log "no /rw line for $QE_PRIVATE in $1/etc/fstab; /rw stays read-only"
        return 1
    fi
}
