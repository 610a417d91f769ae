# shellcheck shell=sh source-path=SCRIPTDIR
# Boot 1: make the second disk look like dom0's, apply the formula (activate: boot), apply again.
. ./common.sh
pvcreate -q /dev/vdb
vgcreate -q qubes_dom0 /dev/vdb
lvcreate -q -y -L 1G -n root qubes_dom0        # a persistent volume, for the control canary
lvcreate -q -y -L 512M -n swap qubes_dom0      # dom0's persistent swap
lvcreate -q -y -L 32G -n ephemeral qubes_dom0  # the scratch volume (sparse)
lvcreate -q -y -L 32G -n bench qubes_dom0      # for the boot-time measurement
lvcreate -q -y -L 64M -n vault qubes_dom0      # a LUKS volume with a line in crypttab
udevadm settle
mkfs.ext4 -q /dev/qubes_dom0/root
mkswap -q /dev/qubes_dom0/swap
head -c 64 /dev/urandom >/etc/vault.key
chmod 600 /etc/vault.key
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /etc/vault.key /dev/qubes_dom0/vault

# dom0's files: its swap line, a persistent mount, a tmpfs line; a LUKS line and a comment in crypttab.
mkdir -p /mnt/persistent
cat >>/etc/fstab <<'FSTAB'
/dev/mapper/qubes_dom0-root /mnt/persistent ext4 defaults,nofail 0 2
/dev/mapper/qubes_dom0-swap none                    swap    defaults,x-systemd.device-timeout=0 0 0
FSTAB
printf 'tmpfs /mnt/tmpfs tmpfs\tdefaults,size=16M 0 0' >>/etc/fstab  # no final newline
printf '# <name> <device> <key> <options>\nvault /dev/qubes_dom0/vault /etc/vault.key luks,noauto\n' >/etc/crypttab
swapon /dev/mapper/qubes_dom0-swap
cp /etc/fstab "$OUT/fstab.pristine"
cp /etc/crypttab "$OUT/crypttab.pristine"

# The emulated Qubes admin commands, with a fresh install's state.
for command in qvm-pool qvm-volume qvm-prefs qubes-prefs qvm-features; do
    ln -s /opt/qubes-emulation/qubes_admin.py "/usr/local/bin/$command"
done
cp -r qubes_emulation /opt/qubes-emulation
mkdir -p /var/lib/qubes-emulation
python3 -c 'import json, qubes_emulation as q; print(json.dumps(q.dom0_like_state()))' >"$QUBES_EMULATION_STATE"

# The formula as it would be in dom0.
mkdir -p /srv/formulas /srv/pillar
cp -r formula /srv/formulas/ephemeral-formula
cp pillar/* /srv/pillar/
salt_apply ephemeral apply-1.json
salt_apply ephemeral apply-2.json
salt_apply ephemeral apply-3-test.json test=True
facts before-reboot
qvm-volume info default-dvm:root rw >"$OUT/qubes-root-rw"
