# shellcheck shell=sh source-path=SCRIPTDIR
# Boot 7, with an initramfs the host patched with the tool's append_archive:
# did the kernel run the appended /init? Then the /rw copy-on-write with
# loop devices (guest/private_cow.sh).
. ./common.sh
dmesg | grep -c "qubes-ephemeral-test: appended init ran" >"$OUT/appended-init" || true
# shellcheck source=../guest/private_cow.sh
. guest/private_cow.sh
