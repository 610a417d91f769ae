#!/bin/sh
# Install qubes-ephemeral in dom0 from this folder, without the RPM: the same
# files as the package (tree/), then a restart of qubesd so that it loads the
# extension. Run again: it changes only what differs. --uninstall removes
# exactly what it installed (the list is kept in RECORD, below).
#
# Usage: sudo ./install.sh [--uninstall] [--force] [--no-restart] [--root DIR]
#   --force       install outside dom0 too (a test machine); uninstall even
#                 while the formula's changes are applied (undo them first:
#                 qubesctl state.apply ephemeral.clean)
#   --no-restart  leave qubesd alone (restart it yourself to load the extension)
#   --root DIR    install under DIR instead of / (for tests; implies --no-restart).
#                 DIR must be an existing folder, as an absolute path without
#                 control characters, . or .., or any symbolic link on the way
#                 (refused, not resolved); a folder of the tree that is a link
#                 out of DIR is refused too.
#
# Exit status: 0 done; 2 refused before any change (a bad option or --root, or
# a tree that does not fit: a file where a folder goes, a folder where a file
# goes, a file that install.sh did not install where one of its files goes, a
# folder it cannot write); 1 a failure midway. Either way one line on stderr.
# Every file and folder it makes is written to its record before it is made,
# so after a failure or a kill midway --uninstall still removes all of it.
set -eu
export LC_ALL=C
usage="usage: install.sh [--uninstall] [--force] [--no-restart] [--root DIR]"
nl='
'

# say MESSAGE: one line on stderr, whatever the message holds.
say() {
    printf 'install.sh: %s\n' "$(printf '%s' "$*" | tr '\n\t' '  ' | tr '[:cntrl:]' '?')" >&2
}
refuse() {
    say "$*"
    exit 2
}
# fail MESSAGE: stop midway; $hint says what is left and how to remove it.
hint="nothing changed"
fail() {
    say "$*; $hint"
    exit 1
}
trap 'fail "stopped by a signal"' HUP INT TERM

here=$(cd "$(dirname "$0")" && pwd)
root=/ action=install force=no restart=yes
while [ $# -gt 0 ]; do
    case $1 in
        --uninstall) action=uninstall ;;
        --force) force=yes ;;
        --no-restart) restart=no ;;
        --root)
            if [ $# -lt 2 ]; then refuse "--root needs a folder; $usage"; fi
            root=$2 restart=no
            shift
            ;;
        --root=*) root=${1#--root=} restart=no ;;
        -h | --help)
            sed -n '2,23p' "$0"
            exit 0
            ;;
        *) refuse "unknown option $1; $usage" ;;
    esac
    shift
done

case $root in
    '') refuse "--root is empty: give the folder to install under, as an absolute path" ;;
    *[[:cntrl:]]*) refuse "--root holds a control character (a newline, a tab...): refused" ;;
    /*) ;;
    *) refuse "--root $root is a relative path: give an absolute one" ;;
esac
while [ "$root" != "${root%/}" ]; do root=${root%/}; done # / is ""
if [ -n "$root" ]; then
    if [ -L "$root" ]; then
        refuse "--root $root is a symbolic link: give the folder itself (links are refused, not followed)"
    elif [ ! -e "$root" ]; then
        refuse "--root $root does not exist: make the folder first"
    elif [ ! -d "$root" ]; then
        refuse "--root $root is not a folder"
    fi
    real=$(cd -P "$root" 2>/dev/null && pwd -P) || refuse "--root $root cannot be entered"
    if [ "$real" != "$root" ]; then
        refuse "--root $root goes through a symbolic link or holds . or .. or //: give the real path ($real)"
    fi
fi

share=/usr/share/qubes-ephemeral             # the record's folder, as a path from /
RECORD=$root$share/installed-by-install.sh   # the files and links it installed, a path from / a line
DIRS=$RECORD.dirs                            # "dir PATH" a line: the folders it made
PENDING=.qubes-ephemeral-install.pending     # folders of the record's own way, noted ahead in
PENDING_IN="/ /usr /usr/share"               # the deepest of these that is there

in_dom0() {
    [ -e /etc/qubes-release ] && [ -x /usr/bin/qubesd ]
}
if [ "$force" = no ] && ! in_dom0; then
    refuse "this is not Qubes OS dom0 (no /etc/qubes-release and /usr/bin/qubesd); --force installs anyway"
fi
if [ "$root" = "" ] && command -v rpm >/dev/null 2>&1 && rpm -q qubes-ephemeral >/dev/null 2>&1; then
    refuse "the qubes-ephemeral package is installed; update or remove it with dnf instead"
fi

# step WHAT COMMAND...: run it; if it fails, stop with one line saying what and why.
step() {
    what=$1
    shift
    if ! out=$("$@" 2>&1); then fail "$what: $out"; fi
}
# note FILE LINE: add LINE to a record, before what it names is made.
note() {
    { printf '%s\n' "$2" >>"$1"; } 2>/dev/null || fail "cannot write its record $1"
}
# safe PATH: a path from / that stays under the root (a record is read back with it).
safe() {
    case $1 in
        / | /../* | /*/../* | */..) return 1 ;;
        /*) return 0 ;;
        *) return 1 ;;
    esac
}
listed() { # listed LINE LIST
    case $nl$2$nl in *"$nl$1$nl"*) return 0 ;; esac
    return 1
}
pendings() { # the pending notes that are there, one path a line
    for folder in $PENDING_IN; do
        if [ -f "$root${folder%/}/$PENDING" ]; then printf '%s\n' "$root${folder%/}/$PENDING"; fi
    done
}

restart_qubesd() {
    hint="restart it yourself: sudo systemctl restart qubesd"
    if [ "$restart" = yes ] && systemctl -q is-active qubesd.service 2>/dev/null; then
        echo "restarting qubesd (running qubes keep running)"
        step "qubesd did not restart" systemctl restart qubesd.service
    elif [ "$restart" = no ] && [ "$root" = "" ]; then
        echo "restart qubesd yourself to load the change: sudo systemctl restart qubesd"
    fi
}

# --- checks before any change ---

checked=$nl
# check_folders DIR: DIR and the folders above it are folders (or not there yet), under the root.
check_folders() {
    dir=$1
    while [ -n "$dir" ]; do
        if listed "$dir" "$checked"; then return 0; fi
        checked=$checked$dir$nl
        if [ -L "$root$dir" ] && [ ! -e "$root$dir" ]; then
            refuse "$root$dir is a broken symbolic link, where install.sh needs a folder; nothing changed"
        elif [ -e "$root$dir" ] && [ ! -d "$root$dir" ]; then
            refuse "$root$dir is a file, where install.sh needs a folder; nothing changed"
        elif [ -L "$root$dir" ] && [ -n "$root" ]; then
            real=$(cd -P "$root$dir" 2>/dev/null && pwd -P) || real="?"
            case $real/ in
                "$root"/*) ;;
                *) refuse "$root$dir is a symbolic link out of --root $root (to $real); nothing changed" ;;
            esac
        fi
        dir=${dir%/*}
    done
}
# writable DIR: the deepest folder of DIR's way that is there can be written.
writable() {
    dir=$1
    while [ -n "$dir" ] && [ ! -e "$root$dir" ]; do dir=${dir%/*}; done
    if [ ! -w "$root${dir:-/}" ]; then
        refuse "$root${dir:-/} cannot be written (read-only, immutable, or not root); nothing changed"
    fi
}
# differs PATH: the tree's PATH (from the current folder) is not at the root as it is here.
differs() {
    if [ -L ".$1" ]; then
        [ ! -L "$root$1" ] || [ "$(readlink "$root$1")" != "$(readlink ".$1")" ]
    else
        [ -L "$root$1" ] || ! cmp -s ".$1" "$root$1" || [ "$(stat -c %a "$root$1")" != "$(stat -c %a ".$1")" ]
    fi
}

# --- changes, each noted in the record before it is made ---

# make_folders DIR: make DIR and the folders above it that are missing.
make_folders() {
    missing=
    dir=$1
    while [ -n "$dir" ] && [ ! -d "$root$dir" ]; do
        missing=$dir$nl$missing
        dir=${dir%/*}
    done
    while read -r dir; do
        if [ -z "$dir" ]; then continue; fi
        note "$DIRS" "dir $dir"
        step "cannot make the folder $root$dir" mkdir "$root$dir"
    done <<EOF
$missing
EOF
}

# The record's own folder: its missing folders are noted in the deepest folder of
# its way that is there, made, noted in the record, and the note goes.
record_folder() {
    missing=
    dir=$share
    while [ -n "$dir" ] && [ ! -d "$root$dir" ]; do
        missing=$dir$nl$missing
        dir=${dir%/*}
    done
    if [ -n "$missing" ]; then
        pending=$root$dir/$PENDING
        printf '%s' "$missing" | while read -r made; do note "$pending" "dir $made"; done
        printf '%s' "$missing" | while read -r made; do step "cannot make the folder $root$made" mkdir "$root$made"; done
    fi
    # What a killed run left in a note goes to the record, then the note goes.
    pendings | while read -r found; do
        sed -n 's/^dir //p' "$found" | while read -r made; do note "$DIRS" "dir $made"; done
        step "cannot remove $found" rm -f "$found"
    done
}

install_tree() {
    if [ ! -d "$here/tree" ]; then
        refuse "there is no tree/ beside install.sh: run the install.sh of the unpacked tarball"
    fi
    cd "$here/tree"
    # Every file and link of the tree, as a path from / (what RECORD holds).
    files=$(find . \( -type f -o -type l \) | sed 's|^\.||' | sort)
    if [ -z "$files" ] || printf '%s\n' "$files" | grep -q '[[:cntrl:]]'; then
        refuse "tree/ is empty or has a name with a control character in it"
    fi
    recorded=$(cat "$RECORD" "$RECORD.new" 2>/dev/null || true)

    # What would change, and whether it can: nothing is changed before all of it is known.
    changes=
    while read -r path; do
        target=$root$path
        check_folders "${path%/*}"
        if [ -d "$target" ] && [ ! -L "$target" ]; then
            refuse "$target is a folder, where install.sh puts a file; nothing changed"
        fi
        if { [ -e "$target" ] || [ -L "$target" ]; } && ! listed "$path" "$recorded"; then
            refuse "$target is there and install.sh did not put it there: move it away first; nothing changed"
        fi
        if differs "$path"; then
            changes=$changes$path$nl
            writable "${path%/*}"
        fi
    done <<EOF
$files
EOF
    # Files of an earlier version that this one no longer has.
    stale=
    while read -r path; do
        if [ -z "$path" ] || ! safe "$path" || listed "$path" "$files" || listed "$path" "$stale"; then continue; fi
        if [ -d "$root$path" ] && [ ! -L "$root$path" ]; then
            refuse "$root$path, which an earlier install.sh put there, is now a folder: move it away first; nothing changed"
        fi
        if [ -e "$root$path" ] || [ -L "$root$path" ]; then
            stale=$stale$path$nl
            writable "${path%/*}"
        fi
    done <<EOF
$recorded
EOF
    if [ -z "$changes$stale" ] && [ ! -e "$RECORD.new" ] && [ ! -e "$DIRS.new" ] && [ -z "$(pendings)" ] &&
        [ "$(cat "$RECORD" 2>/dev/null)" = "$files" ]; then
        echo "qubes-ephemeral is installed and up to date; nothing changed"
        return 0
    fi
    writable "$share"

    hint="what it changed so far is in its record: run it again, or --uninstall removes it"
    record_folder
    changed=0
    while read -r path; do
        if [ -z "$path" ]; then continue; fi
        make_folders "${path%/*}"
        if ! listed "$path" "$recorded"; then
            note "$RECORD" "$path"
            recorded=$recorded$nl$path
        fi
        step "cannot replace $root$path" rm -f "$root$path"
        if [ -L ".$path" ]; then
            step "cannot make the link $root$path" ln -s "$(readlink ".$path")" "$root$path"
        else
            step "cannot write $root$path" cp ".$path" "$root$path"
            step "cannot set the mode of $root$path" chmod "$(stat -c %a ".$path")" "$root$path"
        fi
        changed=$((changed + 1))
    done <<EOF
$changes
EOF
    while read -r path; do
        if [ -z "$path" ]; then continue; fi
        step "cannot remove $root$path" rm -f "$root$path"
        echo "removed $path (no longer part of qubes-ephemeral)"
    done <<EOF
$stale
EOF
    # The record as this version has it: written aside, then renamed over the old one.
    { printf '%s\n' "$files" >"$RECORD.new"; } 2>/dev/null || fail "cannot write its record $RECORD.new"
    step "cannot replace its record" mv -f "$RECORD.new" "$RECORD"
    if [ -f "$DIRS" ]; then
        { sort -u "$DIRS" >"$DIRS.new"; } 2>/dev/null || fail "cannot write its record $DIRS.new"
        step "cannot replace its record" mv -f "$DIRS.new" "$DIRS"
    fi
    if [ "$changed" -eq 0 ] && [ -z "$stale" ]; then
        echo "qubes-ephemeral is installed and up to date; nothing changed (its record was tidied)"
        return 0
    fi
    echo "installed qubes-ephemeral ($changed files changed)"
    restart_qubesd
}

# remove_folders LIST: remove each folder of LIST (deepest first) that is empty;
# one that holds something not ours stays.
remove_folders() {
    while read -r dir; do
        if [ -z "$dir" ] || ! safe "$dir" || [ ! -d "$root$dir" ] || [ -L "$root$dir" ]; then continue; fi
        if [ -z "$(ls -A "$root$dir")" ]; then step "cannot remove the folder $root$dir" rmdir "$root$dir"; fi
    done <<EOF
$1
EOF
}

uninstall() {
    notes=$(pendings)
    if [ ! -e "$RECORD" ] && [ ! -e "$RECORD.new" ] && [ ! -e "$DIRS" ] && [ ! -e "$DIRS.new" ] && [ -z "$notes" ]; then
        echo "install.sh: nothing installed by install.sh under ${root:-/}"
        return 0
    fi
    hint="what is left is still in its record: run install.sh --uninstall again"
    # Files and links first, then the folders it made, deepest first.
    files=$(cat "$RECORD" "$RECORD.new" 2>/dev/null | sort -u)
    while read -r path; do
        if [ -n "$path" ] && safe "$path" && { [ -e "$root$path" ] || [ -L "$root$path" ]; }; then
            step "cannot remove $root$path" rm -f "$root$path"
        fi
    done <<EOF
$files
EOF
    dirs=$( (cat "$DIRS" "$DIRS.new" 2>/dev/null || true; printf '%s' "$notes${notes:+$nl}" | while read -r found; do cat "$found"; done) |
        sed -n 's/^dir //p' | sort -ru)
    step "cannot remove its record" rm -f "$RECORD" "$RECORD.new"
    remove_folders "$dirs"
    # Left: the record's own folders (what it made of them), noted ahead in the
    # folder above them while the record goes.
    own=
    for dir in "$share" "${share%/*}" "${share%/*/*}"; do
        if listed "$dir" "$dirs" && [ -d "$root$dir" ]; then own=$own$dir$nl; fi
    done
    if [ -n "$own" ]; then
        top=$(printf '%s' "$own" | tail -n 1)
        keep=$root${top%/*}/$PENDING
        printf '%s' "$own" | while read -r dir; do note "$keep" "dir $dir"; done
        listed "$keep" "$notes" || notes=$notes${notes:+$nl}$keep
    fi
    step "cannot remove its record" rm -f "$DIRS" "$DIRS.new"
    remove_folders "$own"
    printf '%s' "$notes${notes:+$nl}" | while read -r found; do step "cannot remove $found" rm -f "$found"; done
    remove_folders "$own"
    echo "removed qubes-ephemeral"
}

if [ "$action" = uninstall ]; then
    # As the RPM's %preun: not while the formula's changes are in dom0 (--force: anyway).
    if [ "$force" = no ] && [ -x "$root/usr/bin/qubes-ephemeral" ] && "$root/usr/bin/qubes-ephemeral" applied --root "${root:-/}" >&2; then
        exit 1
    fi
    uninstall
    # The extension is gone: forget that qubesd had loaded it (the formula and the audit check this).
    if [ "$root" = "" ]; then step "cannot remove the extension's stamp" rm -f /run/qubes-ephemeral/qubesd-extension.json; fi
    restart_qubesd
else
    install_tree
fi
