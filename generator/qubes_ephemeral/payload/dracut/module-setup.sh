#!/bin/bash
# shellcheck disable=SC2154 # moddir is set by dracut
# dracut module qubes-ephemeral-private, for qubes that boot their own kernel:
# /rw of forgetful disposables on a copy-on-write layer (see private-cow.sh).
# Installed in the template by the state ephemeral.template; included in every
# initramfs dracut makes there, so a new kernel gets it too.

check() {
    # Only inside a Qubes VM, like Qubes' own module (90qubes-vm).
    [ -f /usr/share/qubes/marker-vm ] && return 0
    return 255
}

depends() {
    echo dm
    return 0
}

installkernel() {
    # The snapshot target, as a module where the kernel does not have it built in.
    hostonly='' instmods dm_snapshot
}

install() {
    inst_simple "$moddir/private-cow.sh" /usr/lib/qubes-ephemeral/private-cow.sh
    # After Qubes' own pre-trigger hook (90) made the root copy-on-write.
    inst_hook pre-trigger 91 "$moddir/qubes-ephemeral-setup.sh"
    inst_hook pre-pivot 50 "$moddir/qubes-ephemeral-fstab.sh"
    # What private-cow.sh runs besides the shell's built-ins (tests/test_private_cow_tools.py checks it).
    inst_multiple dmsetup readlink sleep
    inst_multiple -o modprobe
}
