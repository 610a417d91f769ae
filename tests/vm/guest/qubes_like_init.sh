#!/bin/sh
# shellcheck disable=SC2154 # A, C and OUT come from the environment
# A stand-in for the part of a Qubes VM's /init (qubes-linux-utils
# dracut/simple/init.sh) around the root copy-on-write, written for this test
# with loop devices: $A stands in for xvda (root, attached read-only) and $C
# for xvdc (volatile). It is packed into an initramfs on the host and patched
# there by the real tool (vm-initramfs apply), exactly as dom0 patches a VM
# kernel's initramfs; the VM runs the patched copy. "dmroot" is its marker.
# It runs with PATH holding only the tools dom0's VM initramfs holds
# (private_cow.sh), so it uses those and the shell's built-ins only.

# The volatile volume: swap, then the rest for the root copy-on-write.
sfdisk -q "$C" >/dev/null <<PARTS
1: type=82,start=1MiB,size=64MiB
2: type=83
PARTS
while ! [ -b "${C}p2" ]; do sleep 0.1; done
read -r size <"/sys/class/block/${A##*/}/size"
echo "0 $size snapshot $A ${C}p2 N 16" | dmsetup create dmroot
dmsetup mknodes dmroot
mkdir -p /sysroot
mount /dev/mapper/dmroot /sysroot -o rw

# What the qube then does (core-agent-linux mount-dirs.sh): `mount /rw`, from its fstab.
grep '[[:space:]]/rw[[:space:]]' /sysroot/etc/fstab >"$OUT/cow-fstab"
while read -r device point _; do
    if [ "$point" = /rw ]; then mount "$device" /sysroot/rw; fi
done </sysroot/etc/fstab
dmsetup table >"$OUT/cow-tables"
