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
#   --root DIR    install under DIR instead of / (for tests; implies --no-restart)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=/ action=install force=no restart=yes
while [ $# -gt 0 ]; do
    case $1 in
        --uninstall) action=uninstall ;;
        --force) force=yes ;;
        --no-restart) restart=no ;;
        --root) root=$2 restart=no; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
root=${root%/}
RECORD=$root/usr/share/qubes-ephemeral/installed-by-install.sh

in_dom0() {
    [ -e /etc/qubes-release ] && [ -x /usr/bin/qubesd ]
}
if [ "$force" = no ] && ! in_dom0; then
    echo "install.sh: this is not Qubes OS dom0 (no /etc/qubes-release and /usr/bin/qubesd); --force installs anyway" >&2
    exit 2
fi
if [ "$root" = "" ] && command -v rpm >/dev/null 2>&1 && rpm -q qubes-ephemeral >/dev/null 2>&1; then
    echo "install.sh: the qubes-ephemeral package is installed; update or remove it with dnf instead" >&2
    exit 2
fi

restart_qubesd() {
    if [ "$restart" = yes ] && systemctl -q is-active qubesd.service 2>/dev/null; then
        echo "restarting qubesd (running qubes keep running)"
        systemctl restart qubesd.service
    elif [ "$restart" = no ] && [ "$root" = "" ]; then
        echo "restart qubesd yourself to load the change: sudo systemctl restart qubesd"
    fi
}

# mkdirs DIR: make DIR and its missing parents, recording those we made.
mkdirs() {
    if [ ! -d "$1" ]; then
        mkdirs "$(dirname "$1")"
        mkdir "$1"
        echo "dir ${1#"$root"}" >>"$new_record"
    fi
}

uninstall() {
    if [ ! -f "$RECORD" ]; then
        echo "install.sh: nothing installed by install.sh under ${root:-/}"
        return 0
    fi
    # Files and links first, then the folders we made, deepest first.
    while read -r path; do
        rm -f "$root$path"
    done <"$RECORD"
    dirs=$(grep '^dir ' "$RECORD.dirs" 2>/dev/null | sort -r || true)
    rm -f "$RECORD" "$RECORD.dirs"
    echo "$dirs" | while read -r _ path; do
        if [ -n "$path" ]; then rmdir "$root$path" 2>/dev/null || true; fi
    done
    echo "removed qubes-ephemeral"
}

install_tree() {
    new_record=$(mktemp)
    [ -f "$RECORD.dirs" ] && cat "$RECORD.dirs" >"$new_record"
    changed=0
    cd "$here/tree"
    # Every file and link of the tree, as a path from / (what RECORD holds).
    find . \( -type f -o -type l \) | sed 's|^\.||' | sort >"$new_record.files"
    while read -r path; do
        source=.$path target=$root$path
        mkdirs "$(dirname "$target")"
        if [ -L "$source" ]; then
            link=$(readlink "$source")
            if [ ! -L "$target" ] || [ "$(readlink "$target")" != "$link" ]; then
                rm -rf "$target"
                ln -s "$link" "$target"
                changed=$((changed + 1))
            fi
        else
            mode=$(stat -c %a "$source")
            if [ -L "$target" ] || ! cmp -s "$source" "$target" || [ "$(stat -c %a "$target")" != "$mode" ]; then
                rm -f "$target"
                cp "$source" "$target"
                chmod "$mode" "$target"
                changed=$((changed + 1))
            fi
        fi
    done <"$new_record.files"
    # Files of an earlier version that this one no longer has.
    if [ -f "$RECORD" ]; then
        sort "$RECORD" | comm -23 - "$new_record.files" | while read -r path; do
            rm -f "$root$path"
            echo "removed $path (no longer part of qubes-ephemeral)"
        done
    fi
    cat "$new_record.files" >"$RECORD"
    rm -f "$new_record.files"
    grep '^dir ' "$new_record" | sort -u >"$RECORD.dirs" || true
    rm -f "$new_record"
    if [ "$changed" -eq 0 ]; then
        echo "qubes-ephemeral is installed and up to date; nothing changed"
        return 0
    fi
    echo "installed qubes-ephemeral ($changed files changed)"
    restart_qubesd
}

if [ "$action" = uninstall ]; then
    # As the RPM's %preun: not while the formula's changes are in dom0 (--force: anyway).
    if [ "$force" = no ] && [ -x "$root/usr/bin/qubes-ephemeral" ] && "$root/usr/bin/qubes-ephemeral" applied --root "${root:-/}" >&2; then
        exit 1
    fi
    uninstall
    # The extension is gone: forget that qubesd had loaded it (the formula and the audit check this).
    if [ "$root" = "" ]; then rm -f /run/qubes-ephemeral/qubesd-extension.json; fi
    restart_qubesd
else
    install_tree
fi
