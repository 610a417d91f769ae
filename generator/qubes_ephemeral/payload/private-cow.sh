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
# write to it, and nothing is written to the persistent private volume. It
# says so on the console (stderr of /init) and in the kernel log (/dev/kmsg).
#
# The initramfs dom0 makes for its VM kernels holds only what dracut's modules
# qubes-vm-simple and dm install: no cat, sed, basename, mv or rm. Besides the
# shell's built-ins this uses only dmsetup, modprobe, readlink and sleep
# (tests/test_private_cow_tools.py holds the list and checks it).
# The device names can be changed for tests (loop devices stand in for them).

QE_PRIVATE=${QE_PRIVATE:-/dev/xvdb}        # the private volume, /rw
QE_ROOT_MAP=${QE_ROOT_MAP:-dmroot}         # the root copy-on-write mapping
QE_SPARE=${QE_SPARE:-/dev/xvdc3}           # free space on xvdc when root is writable
QE_SYS=${QE_SYS:-/sys}                     # sysfs
QE_MAPPER=${QE_MAPPER:-/dev/mapper}        # where dmsetup makes the device nodes
QE_KMSG=${QE_KMSG:-/dev/kmsg}              # the kernel log
QE_MAP=dmprivate
QE_NL='
'

# qe_say LEVEL MESSAGE: on the console (stderr of /init) and in the kernel
# log at LEVEL (3 error, 5 notice), which the qube can read back (dmesg).
qe_say() {
    qe_level=$1
    shift
    echo "qubes-ephemeral: $*" >&2
    if [ -w "$QE_KMSG" ]; then
        { echo "<$qe_level>qubes-ephemeral: $*" >>"$QE_KMSG"; } 2>/dev/null
    fi
}

qe_log() {
    qe_say 5 "$@"
}

# qe_fail MESSAGE: say why /rw stays read-only; returns 1.
qe_fail() {
    qe_say 3 "$*; /rw stays read-only"
    return 1
}

# qe_read FILE: its first line in qe_value; 1 when it cannot be read.
qe_read() {
    qe_value=
    [ -r "$1" ] || return 1
    { IFS= read -r qe_value <"$1"; } 2>/dev/null || [ -n "$qe_value" ]
}

# qe_sysfs DEVICE: the device's folder in sysfs, in qe_value.
qe_sysfs() {
    qe_value=$1
    if command -v readlink >/dev/null; then
        qe_value=$(readlink -f "$1") || qe_value=$1
    fi
    qe_value=$QE_SYS/class/block/${qe_value##*/}
}

# qe_attr DEVICE NAME: the sysfs attribute NAME of DEVICE, in qe_value.
qe_attr() {
    qe_sysfs "$1"
    qe_path=$qe_value/$2
    qe_read "$qe_path" || qe_fail "cannot read $qe_path for $1"
}

# qe_sectors MAJOR:MINOR: size in 512-byte sectors, in qe_value.
qe_sectors() {
    qe_read "$QE_SYS/dev/block/$1/size" || qe_fail "cannot read the size of $1"
}

qe_private_cow_setup() {
    qe_n=0
    while ! [ -b "$QE_PRIVATE" ] && [ "$qe_n" -lt 100 ]; do
        sleep 0.1
        qe_n=$((qe_n + 1))
    done
    [ -b "$QE_PRIVATE" ] || return 0                         # no private volume
    qe_sysfs "$QE_PRIVATE"
    qe_path=$qe_value/ro
    qe_read "$qe_path" || {
        qe_say 3 "cannot read $qe_path: whether $QE_PRIVATE is read-only is unknown; /rw is left on it as it is"
        return 1
    }
    [ "$qe_value" = 1 ] || return 0                          # writable: not ours to change
    # Read-only from here: every way out says why, on the console.
    command -v dmsetup >/dev/null || {
        qe_fail "dmsetup is missing from this initramfs"
        return 1
    }
    if command -v modprobe >/dev/null; then
        modprobe dm_snapshot 2>/dev/null
    fi
    case "$QE_NL$(dmsetup targets 2>/dev/null)" in
        *"${QE_NL}snapshot "*) ;;
        *)
            qe_fail "the device-mapper snapshot target (dm_snapshot) is not available"
            return 1
            ;;
    esac
    qe_attr "$QE_PRIVATE" dev || return 1
    qe_private=$qe_value
    # shellcheck disable=SC2046 # the table's fields, split on purpose
    set -- $(dmsetup table "$QE_ROOT_MAP" 2>/dev/null)
    if [ "${3:-}" = snapshot ]; then
        # Root is read-only too: its copy-on-write takes the whole of xvdc2.
        # Nothing is written to it yet (root is not mounted): give it the
        # first half and /rw the second, then load the same table again.
        qe_len=$2 qe_origin=$4 qe_cow=$5 qe_persist=$6 qe_chunk=$7
        qe_sectors "$qe_cow" || return 1
        qe_total=$qe_value
        qe_half=$((qe_total / 2 / 8 * 8))
        echo "0 $qe_half linear $qe_cow 0" | dmsetup create qe-cow-root || {
            qe_fail "cannot split the copy-on-write space"
            return 1
        }
        echo "0 $((qe_total - qe_half)) linear $qe_cow $qe_half" | dmsetup create qe-cow-private || {
            qe_fail "cannot split the copy-on-write space"
            dmsetup remove qe-cow-root
            return 1
        }
        qe_cow_root=$(dmsetup info -c --noheadings -o major,minor --separator : qe-cow-root)
        qe_table="0 $qe_len snapshot $qe_origin $qe_cow_root $qe_persist $qe_chunk"
        if ! dmsetup suspend "$QE_ROOT_MAP" || ! dmsetup reload "$QE_ROOT_MAP" --table "$qe_table"; then
            dmsetup resume "$QE_ROOT_MAP" 2>/dev/null
            qe_fail "cannot move the root copy-on-write"
            return 1
        fi
        dmsetup resume "$QE_ROOT_MAP" || {
            qe_fail "cannot resume $QE_ROOT_MAP"
            return 1
        }
    elif [ -b "$QE_SPARE" ]; then
        # Root is writable: the initramfs left the rest of xvdc unused.
        qe_attr "$QE_SPARE" dev || return 1
        qe_spare=$qe_value
        qe_sectors "$qe_spare" || return 1
        echo "0 $qe_value linear $qe_spare 0" | dmsetup create qe-cow-private || {
            qe_fail "cannot use $QE_SPARE"
            return 1
        }
    else
        qe_fail "no copy-on-write space for the read-only private volume"
        return 1
    fi
    qe_cow_private=$(dmsetup info -c --noheadings -o major,minor --separator : qe-cow-private)
    qe_sectors "$qe_private" || return 1
    echo "0 $qe_value snapshot $qe_private $qe_cow_private N 16" | dmsetup create "$QE_MAP" || {
        qe_fail "cannot create the /rw copy-on-write"
        return 1
    }
    dmsetup mknodes "$QE_MAP"
    qe_log "/rw writes go to a copy-on-write layer on the volatile volume"
}

# qe_rw_line LINE: true when LINE mounts DEVICE on /rw, with DEVICE as $2.
qe_rw_line() {
    case $1 in
        "$2"[[:space:]]*) ;;
        *) return 1 ;;
    esac
    qe_rest=${1#"$2"}
    qe_rest=${qe_rest#"${qe_rest%%[![:space:]]*}"}
    case $qe_rest in
        /rw[[:space:]]*) return 0 ;;
    esac
    return 1
}

qe_private_cow_fstab() {
    [ -b "$QE_MAPPER/$QE_MAP" ] || return 0
    # Only the line that mounts the private volume on /rw; root's changes go
    # to its own copy-on-write, so the template's fstab is untouched. The file
    # is rewritten in place (no sed, mv or rm here), keeping its other bytes.
    qe_fstab=$1/etc/fstab
    [ -r "$qe_fstab" ] || {
        qe_fail "cannot read $qe_fstab"
        return 1
    }
    qe_out='' qe_found='' qe_changed=''
    while :; do
        qe_end=$QE_NL
        if ! IFS= read -r qe_line; then
            [ -n "$qe_line" ] || break
            qe_end=                                          # a last line without a newline
        fi
        if qe_rw_line "$qe_line" "$QE_PRIVATE"; then
            qe_line=/dev/mapper/$QE_MAP${qe_line#"$QE_PRIVATE"}
            qe_changed=1
        fi
        if qe_rw_line "$qe_line" "/dev/mapper/$QE_MAP"; then
            qe_found=1
        fi
        qe_out=$qe_out$qe_line$qe_end
        [ -n "$qe_end" ] || break
    done <"$qe_fstab"
    if [ -z "$qe_found" ]; then
        qe_fail "no /rw line for $QE_PRIVATE in $qe_fstab"
        return 1
    fi
    if [ -n "$qe_changed" ]; then
        { printf '%s' "$qe_out" >"$qe_fstab"; } 2>/dev/null || {
            qe_fail "cannot write $qe_fstab"
            return 1
        }
    fi
}
