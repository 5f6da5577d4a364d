# shellcheck shell=bash
# run_module NAME MODULE ARGS... : runs `MODULE.main(ARGS)` with this clone's Python
# (PYTHON, else .venv/bin/python, else python3) and exits with its code. NAME is the
# calling script's name, for the one message when no Python is there. Sourced by the
# thin wrappers scripts/vault.sh and scripts/lab.sh.
run_module() {
    local name=$1 module=$2 root python
    shift 2
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    python=${PYTHON:-}
    if [[ -z $python ]]; then
        python=python3
        [[ -x $root/.venv/bin/python ]] && python=$root/.venv/bin/python
    fi
    command -v -- "$python" >/dev/null ||
        { echo "$name: no $python to run; run: bash scripts/setup.sh" >&2; exit 1; }
    # -c instead of -m: -m would put the working directory first on sys.path, and a
    # working directory inside another clone would then load that clone's dbfleet.
    exec "$python" -c '
import importlib, sys
sys.path[0] = sys.argv.pop(1)
sys.exit(importlib.import_module(sys.argv.pop(1)).main(sys.argv[1:]))
' "$root" "$module" "$@"
}
