# shellcheck shell=bash
# Shared by the scripts: make (or reuse) the project's virtualenv.
# Usage: . scripts/_venv.sh; ensure_venv DIR PYTHON EXTRAS
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
    if [ ! -x "$dir/bin/python" ]; then
        "$python" -m venv "$dir"
    fi
    if [ ! -e "$stamp" ]; then
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
        rm -f "$dir"/.installed-*
        touch "$stamp"
    fi
}
