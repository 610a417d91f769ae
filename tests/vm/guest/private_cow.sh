# shellcheck shell=sh
# Boot 7: the /rw copy-on-write, for real. Loop devices stand in for xvda
# (root), xvdb (private) and xvdc (volatile); the initramfs the host made
# from qubes_like_init.sh is patched by the real tool, and its patched /init
# runs with the hook it carries, with PATH holding only the tools dom0's VM
# initramfs holds. Sourced by the job (common.sh variables).
W=/var/tmp/cow
rm -rf "$W" && mkdir -p "$W/bin" /mnt/cow
# What dracut's modules qubes-vm-simple and dm install in dom0's VM initramfs
# (tests/test_private_cow_tools.py: IMAGE_TOOLS, checked to be the same list).
IMAGE_TOOLS="readlink uname grep kmod modprobe ln switch_root mount umount mkdir rmdir sleep sfdisk mkswap dmsetup"
for tool in $IMAGE_TOOLS; do
    if found=$(command -v "$tool"); then ln -s "$found" "$W/bin/$tool"; fi
done
truncate -s 256M "$W/xvda.img" "$W/xvdb.img"
truncate -s 1G "$W/xvdc.img"
mkfs.ext4 -q -F "$W/xvda.img"
mkfs.ext4 -q -F "$W/xvdb.img"
mount -o loop "$W/xvdb.img" /mnt/cow
mkdir -p /mnt/cow/home/user
echo "precious private data" >/mnt/cow/home/user/keep.txt
umount /mnt/cow

# setup [-r]: attach the stand-ins; root and (with -r) private read-only, as dom0 attaches them.
setup() {
    # shellcheck disable=SC2086 # no option at all for a writable private volume
    B=$(losetup -f --show ${1:-} "$W/xvdb.img")
    mount -o loop "$W/xvda.img" /mnt/cow
    mkdir -p /mnt/cow/etc /mnt/cow/rw
    # The /rw line as Qubes ships it (core-agent-linux filesystem/fstab), naming our private device.
    printf '/dev/mapper/dmroot / ext4 defaults,discard,noatime 1 1\n%s /rw auto noauto,defaults,discard,nosuid,nodev 1 2\n' \
        "$B" >/mnt/cow/etc/fstab
    umount /mnt/cow
    A=$(losetup -f --show -r "$W/xvda.img")
    C=$(losetup -f --show -P "$W/xvdc.img")
    export A B C
}

teardown() {
    umount /sysroot/rw /sysroot 2>/dev/null || true
    for map in dmprivate qe-cow-private dmroot qe-cow-root; do
        dmsetup remove "$map" 2>/dev/null || true
    done
    losetup -d "$A" "$B" "$C" || true
}

# The real tool patches the initramfs; the patched /init and the hook come out of it.
cp qubes-like-initramfs "$W/initramfs"
LIB=/usr/share/qubes-ephemeral/lib/qubes_ephemeral/payload  # installed from the package in boot 1
python3 "$LIB/vm_initramfs.py" apply "$W/initramfs" --hook "$LIB/private-cow.sh" >"$OUT/cow-apply"
python3 - "$W/initramfs" "$W/init" /qubes-ephemeral-private-cow.sh "$LIB" <<'PY'
import sys
sys.path.insert(0, sys.argv[4])
import vm_initramfs
data = open(sys.argv[1], "rb").read()
open(sys.argv[2], "wb").write(vm_initramfs.read_file(data, "init").data)
open(sys.argv[3], "wb").write(vm_initramfs.read_file(data, vm_initramfs.HOOK_NAME).data)
PY
cp "$W/init" "$OUT/cow-init"
modprobe dm_snapshot

# 1. A forgetful disposable: private read-only. Its /rw is written to.
setup -r
sha256sum "$W/xvda.img" "$W/xvdb.img" | cut -d' ' -f1 >"$OUT/cow-sha-before"
rc=0
QE_PRIVATE=$B unshare -m sh -c "PATH=$W/bin /bin/sh $W/init 2>$OUT/cow-init-stderr && \
    cat /sysroot/rw/home/user/keep.txt >$OUT/cow-keep && \
    echo $C8 >/sysroot/rw/home/user/new.txt && echo $C8 >>/sysroot/rw/home/user/keep.txt && sync && \
    cat /sysroot/rw/home/user/new.txt >$OUT/cow-readback" || rc=$?
echo "$rc" >"$OUT/cow-rc"
dmesg | grep -c "qubes-ephemeral: /rw writes go to a copy-on-write layer" >"$OUT/cow-kmsg" || true
teardown
sync
sha256sum "$W/xvda.img" "$W/xvdb.img" | cut -d' ' -f1 >"$OUT/cow-sha-after"
python3 guest/scan.py markers "$W/xvda.img" "$W/xvdb.img" "$W/xvdc.img" >"$OUT/cow-scan.json"

# 2. An ordinary qube: private writable. The hook must change nothing.
rm -f "$W/xvdc.img" && truncate -s 1G "$W/xvdc.img"
setup
mkdir -p "$OUT/plain"
rc=0
# The anti-test of case 1: the same canary, written to /rw here, is found on the private image.
QE_PRIVATE=$B OUT="$OUT/plain" unshare -m sh -c "PATH=$W/bin /bin/sh $W/init 2>\"\$OUT/cow-init-stderr\" && \
    echo $C8 >/sysroot/rw/home/user/new.txt && sync" || rc=$?
echo "$rc" >"$OUT/plain-rc"
teardown
sync
python3 guest/scan.py markers "$W/xvdb.img" "$W/xvdc.img" >"$OUT/plain/cow-scan.json"
