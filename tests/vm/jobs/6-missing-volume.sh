# shellcheck shell=sh source-path=SCRIPTDIR
# Boot 6: the scratch volume is gone. The boot must complete, and nothing lands on the bare mount point.
. ./common.sh
facts missing
writers writers-missing
