# shellcheck shell=sh disable=SC2034
# Sourced by every job (in the guest, from the shared folder).
set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MP=/var/lib/qubes-ephemeral
OUT=/mnt/host/out
C1=$(sed -n 1p markers)  # scratch filesystem canary
C2=$(sed -n 2p markers)  # swap canary
C3=$(sed -n 3p markers)  # control: written to a persistent volume, must be found
C4=$(sed -n 4p markers)  # in a dom0 log directory about qubes (traces): on the scratch filesystem
C5=$(sed -n 5p markers)  # in the journal, with journald: volatile
C6=$(sed -n 6p markers)  # control: in the journal before journald: volatile, must be found
C7=$(sed -n 7p markers)  # control: in a log directory we do not cover, must be found
C8=$(sed -n 8p markers)  # written to /rw of a disposable with the /rw copy-on-write
export OUT

# Qubes cannot run here: its admin commands are emulated (tests/qubes_emulation).
export QUBES_EMULATION_STATE=/var/lib/qubes-emulation/state.json
# Where the package puts the generator for the guest's Python (bookworm 3.11, trixie 3.13).
SITE=/usr/lib/python$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')/site-packages

salt_apply() {  # salt_apply STATE OUTFILE [salt args]
    state=$1 out=$2
    shift 2
    # The formula's file root comes from /etc/salt/minion.d/formula-ephemeral.conf, as in dom0.
    salt-call --local --pillar-root=/srv/pillar --out=json state.apply "$state" "$@" >"$OUT/$out" 2>"$OUT/$out.stderr" || true
}

audit() {  # audit NAME [PILLAR]: qubes-ephemeral audit, as the package installed it, recorded for the unit tests
    PYTHONPATH=$SITE qubes-ephemeral audit "${2:-/srv/pillar/ephemeral.sls}" \
        --record "$OUT/$1.recording.json" >"$OUT/$1.txt" 2>"$OUT/$1.stderr" && echo 0 >"$OUT/$1.rc" || echo $? >"$OUT/$1.rc"
}

writers() {  # writers NAME: what the dummy log writers saw when they started (see 1-provision-apply.sh)
    cat /run/qe-writer-* >"$OUT/$1" 2>/dev/null || true
}

keyscan() {  # keyscan PHASE: every key of our mappings so far, searched for in the guest's files and journal
    python3 guest/keyscan.py "$1" known-keys.json ephemeral ephemeral-swap >"$OUT/keyscan-$1.json"
}

facts() {  # facts NAME: the system's state into out/NAME.json
    python3 guest/facts.py "$MP" ephemeral ephemeral-swap >"$OUT/$1.json"
}
