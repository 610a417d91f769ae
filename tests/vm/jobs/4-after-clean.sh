# shellcheck shell=sh source-path=SCRIPTDIR
# Boot 4: after clean, dom0's own swap and files are back. Then activate: now, without a reboot.
. ./common.sh
facts after-clean
cp /etc/fstab "$OUT/fstab.after-clean"
cp /etc/crypttab "$OUT/crypttab.after-clean"
qvm-volume info default-dvm:root rw >"$OUT/qubes-root-rw"
qvm-features default-dvm >"$OUT/qubes-features"
test -e /etc/qubes-ephemeral && echo present >"$OUT/qubes-record" || echo absent >"$OUT/qubes-record"
# dom0's own swap is back: the audit reports it as a gap again (a description without swap:).
audit audit-swap-gap no-swap-pillar.sls
# A description with only swap: applied with activate: now, then cleaned, all without a reboot.
cp swap-only-pillar.sls /srv/pillar/ephemeral.sls
salt_apply ephemeral swap-only-apply.json
facts swap-only
keyscan 4-swap-only
cp /etc/crypttab "$OUT/crypttab.swap-only"
salt_apply ephemeral.clean swap-only-clean.json
facts swap-only-cleaned
cp /etc/fstab "$OUT/fstab.swap-only-cleaned"
cp /etc/crypttab "$OUT/crypttab.swap-only-cleaned"
for left in /etc/systemd/system/*qubes-ephemeral* /etc/systemd/system/*/*qubes-ephemeral* /usr/local/libexec/qubes-ephemeral/*; do
    if [ -e "$left" ]; then echo "$left"; fi
done >"$OUT/swap-only-leftovers"
swapon /dev/mapper/qubes_dom0-swap  # dom0's own swap again, as after the reboot
cp pillar/ephemeral.sls /srv/pillar/ephemeral.sls  # the pillar of boot 1 (boot 2 switched to cow-pillar.sls)
sed -i 's/^  activate: boot/  activate: now/' /srv/pillar/ephemeral.sls
salt_apply ephemeral activate-now.json
facts activated
keyscan 4-activate-now
# Protected at once, as after a boot: the audit finds every scratch and swap unit active.
audit audit-activated
# Prepare the next boot: the scratch volume now holds someone's filesystem.
systemctl stop 'var-lib-qubes\x2dephemeral.mount' systemd-cryptsetup@ephemeral.service
mkfs.ext4 -q -F /dev/qubes_dom0/ephemeral
mkdir -p /mnt/check
mount /dev/qubes_dom0/ephemeral /mnt/check
echo "thesis, chapter 3" >/mnt/check/precious.txt
umount /mnt/check
