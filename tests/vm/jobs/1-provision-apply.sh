# shellcheck shell=sh source-path=SCRIPTDIR
# Boot 1: make the second disk look like dom0's, apply the formula (activate: boot), apply again.
. ./common.sh
pvcreate -q /dev/vdb
vgcreate -q qubes_dom0 /dev/vdb
lvcreate -q -y -L 1G -n root qubes_dom0        # a persistent volume, for the control canary
lvcreate -q -y -L 512M -n swap qubes_dom0      # dom0's persistent swap
lvcreate -q -y -L 32G -n ephemeral qubes_dom0  # the scratch volume (sparse)
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

# dom0's journal is persistent: a control canary goes there before journald: volatile.
mkdir -p /var/log/journal
systemd-tmpfiles --create --prefix /var/log/journal
journalctl --flush
logger "$C6"
journalctl --flush
echo "$C7" >/var/log/qe-control.log  # a log we do not cover: the control for C4

# Stand-ins for the services that write dom0's logs about qubes: each records,
# as it starts, what its log directory is mounted from. The one for qubesd also
# loads the qubes.ext extensions as qubesd does (qubes/ext/__init__.py
# get_extensions), with tests/qubesd_standin as its qubes package, and then
# keeps running under qubesd's name, as the extension's stamp expects.
cp -r qubesd_standin /opt/qubesd-standin
for unit in qubesd:/var/log/qubes libvirtd:/var/log/libvirt/libxl xenconsoled:/var/log/xen/console; do
    name=${unit%%:*} dir=${unit#*:}
    mkdir -p "$dir"
    record="/bin/sh -c 'echo \"$name \$\$(findmnt -n -o FSTYPE,SOURCE --target $dir | head -n1) \$\$(ls -d /var/lib/qubes-ephemeral/pools/ephemeral/appvms 2>/dev/null)\" >/run/qe-writer-$name'"
    if [ "$name" = qubesd ]; then
        service="Type=simple
ExecStartPre=$record
ExecStart=/usr/bin/python3 -c 'import time; from importlib.metadata import entry_points; [e.load()() for e in entry_points(group=\"qubes.ext\")]; time.sleep(10**6)' /usr/bin/qubesd
Environment=PYTHONPATH=/opt/qubesd-standin:$SITE"
    else
        service="Type=oneshot
RemainAfterExit=yes
ExecStart=$record"
    fi
    cat >"/etc/systemd/system/$name.service" <<UNIT
[Unit]
Description=Stand-in for $name: records where its logs go
[Service]
$service
[Install]
WantedBy=multi-user.target
UNIT
    systemctl enable --quiet "$name.service"
done

# The emulated Qubes admin commands, with a fresh install's state.
for command in qvm-pool qvm-volume qvm-prefs qubes-prefs qvm-features qvm-ls; do
    ln -s /opt/qubes-emulation/qubes_admin.py "/usr/local/bin/$command"
done
cp -r qubes_emulation /opt/qubes-emulation
mkdir -p /var/lib/qubes-emulation
python3 -c 'import json, qubes_emulation as q; print(json.dumps(q.dom0_like_state()))' >"$QUBES_EMULATION_STATE"

# qubes-ephemeral as in dom0: the tarball packaging/build made, with its install.sh
# (the same tree as the RPM): the formula on Salt's file_roots through minion.d.
mkdir -p /tmp/package /srv/pillar
tar -xzf qubes-ephemeral.tar.gz -C /tmp/package
for installer in /tmp/package/qubes-ephemeral-*/install.sh; do
    "$installer" --force --no-restart >"$OUT/install"
    "$installer" --force --no-restart >"$OUT/install-again"
done
# What the package's restart of qubesd does in dom0: the qubesd stand-in loads the
# extension now (the formula needs it loaded), and writes its stamp.
systemctl start qubesd.service
n=0
while [ ! -e /run/qubes-ephemeral/qubesd-extension.json ] && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
cp pillar/* /srv/pillar/
audit audit-before-apply
salt_apply ephemeral apply-1.json
salt_apply ephemeral apply-2.json
salt_apply ephemeral apply-3-test.json test=True
facts before-reboot
qvm-volume info default-dvm:root rw >"$OUT/qubes-root-rw"
qvm-features default-dvm >"$OUT/qubes-features"
keyscan 1-apply
