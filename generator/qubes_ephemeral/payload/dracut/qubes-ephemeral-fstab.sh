#!/bin/sh
# shellcheck source-path=SCRIPTDIR
# qubes-ephemeral, dracut pre-pivot hook: mount /rw from the copy-on-write.
# The root filesystem is mounted read-only here; its writes go to the root
# copy-on-write on the volatile volume, so the template is not changed.
# shellcheck source=../private-cow.sh
. /usr/lib/qubes-ephemeral/private-cow.sh
if [ -b /dev/mapper/dmprivate ]; then
    mount -o remount,rw "$NEWROOT" && qe_private_cow_fstab "$NEWROOT"
    mount -o remount,ro "$NEWROOT"
fi
