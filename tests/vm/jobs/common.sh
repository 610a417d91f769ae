# shellcheck shell=sh disable=SC2034
# Sourced by every job (in the guest, from the shared folder).
set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MP=/var/lib/qubes-ephemeral
OUT=/mnt/host/out
C1=$(sed -n 1p markers)  # scratch filesystem canary
C2=$(sed -n 2p markers)  # swap canary
C3=$(sed -n 3p markers)  # control: written to a persistent volume, must be found

# Qubes cannot run here: its admin commands are emulated (tests/qubes_emulation).
export QUBES_EMULATION_STATE=/var/lib/qubes-emulation/state.json

salt_apply() {  # salt_apply STATE OUTFILE [salt args]
    state=$1 out=$2
    shift 2
    salt-call --local --file-root=/srv/formulas/ephemeral-formula --pillar-root=/srv/pillar \
        --out=json state.apply "$state" "$@" >"$OUT/$out" 2>"$OUT/$out.stderr" || true
}

facts() {  # facts NAME: the system's state into out/NAME.json
    python3 guest/facts.py "$MP" ephemeral ephemeral-swap >"$OUT/$1.json"
}
