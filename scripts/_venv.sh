# shellcheck shell=bash
# Shared by the scripts: the system tools the tests and the bench drive, and the
# project's virtualenv. Usage: . scripts/_venv.sh; ensure_system_tools; ensure_venv DIR PYTHON EXTRAS
set -euo pipefail

pick_python() {
    for candidate in "$@"; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# ensure_venv DIR PYTHON SPEC: a venv in DIR with the project installed as SPEC
# (e.g. ".[test]"); reinstalled only when pyproject.toml changed.
ensure_venv() {
    local dir=$1 python=$2 spec=$3
    local stamp
    stamp="$dir/.installed-$( (cat pyproject.toml; echo "$spec") | sha256sum | cut -c1-16)"
    # A venv cut short (a kill while it was made) has no pip: make it again.
    if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$dir"
        "$python" -m venv "$dir"
    fi
    if [ ! -e "$stamp" ]; then
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
        rm -f "$dir"/.installed-*
        touch "$stamp"
    fi
}

ensure_system_tools() {
    # System tools the tests drive for real (blkid, mkfs, cryptsetup, ...).
    need_apt=()
    for pair in blkid:util-linux mkfs.ext4:e2fsprogs mkfs.xfs:xfsprogs sfdisk:fdisk cryptsetup:cryptsetup-bin \
                shellcheck:shellcheck systemd-escape:systemd unshare:util-linux \
                qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils debootstrap:debootstrap vagrant:vagrant \
                cpio:cpio zstd:zstd xz:xz-utils rpmbuild:rpm dracut:dracut-core; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
    done
    # dracut-core (not dracut, which replaces initramfs-tools and remakes /boot's initrd) builds dom0's
    # VM initramfs in tests/test_private_cow_tools.py, when QUBES_LINUX_UTILS names qubes-linux-utils.
    # The VM suite boots Debian's stock kernel from the host's /boot.
    compgen -G '/boot/vmlinuz-*-amd64' >/dev/null || need_apt+=(linux-image-amd64)
    # `vagrant validate` of the Vagrantfile's libvirt provider needs the plugin.
    dpkg -s vagrant-libvirt >/dev/null 2>&1 || need_apt+=(vagrant-libvirt)
    if [ ${#need_apt[@]} -gt 0 ]; then
        echo "+ apt-get install ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    fi
}
