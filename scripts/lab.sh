#!/usr/bin/env bash
# The ssh target's lab on this machine: the hosts of a fleet file as network namespaces,
# each running its own sshd on its address (needs root).
#
#   scripts/lab.sh up                        build the lab (idempotent); stores the login key and
#                                            the hosts' public keys in Vault at the file's ssh.key
#   scripts/lab.sh down                      remove every namespace, link, process and file up made
#   scripts/lab.sh status                    one line per host; exit 0 all up, 1 some down, 3 no lab
#   scripts/lab.sh exec ADDRESS -- CMD...    run CMD inside that host's namespace (its exit code)
#
# The work is done by dbfleet/ops/lab.py (its docstring says what the lab is made of). This
# wrapper only picks the Python that has the project's dependencies.
#
# Environment:
#   DBFLEET_SPEC    the fleet file (default: stacks/lab.yaml in this clone)
#   DBFLEET_HOME    where the lab keeps its keys and state, under lab/ (default: .dbfleet)
#   VAULT_ADDR, VAULT_TOKEN
#                   the Vault `up` writes to (local: eval "$(scripts/vault.sh env)")
#   PYTHON          the Python to run (default: this clone's .venv/bin/python, else python3)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python=${PYTHON:-}
if [[ -z $python ]]; then
    python=python3
    [[ -x $root/.venv/bin/python ]] && python=$root/.venv/bin/python
fi
command -v -- "$python" >/dev/null \
    || { echo "lab.sh: no $python to run; run: bash scripts/setup.sh" >&2; exit 1; }
# -c instead of -m: -m would put the working directory first on sys.path, and a working
# directory inside another clone would then load that clone's dbfleet.
exec "$python" -c '
import sys
sys.path[0] = sys.argv.pop(1)
from dbfleet.ops.lab import main
sys.exit(main(sys.argv[1:]))
' "$root" "$@"
