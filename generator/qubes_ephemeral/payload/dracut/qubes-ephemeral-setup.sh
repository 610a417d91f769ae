#!/bin/sh
# shellcheck source-path=SCRIPTDIR
# qubes-ephemeral, dracut pre-trigger hook: the /rw copy-on-write (private-cow.sh).
# shellcheck source=../private-cow.sh
. /usr/lib/qubes-ephemeral/private-cow.sh
qe_private_cow_setup
