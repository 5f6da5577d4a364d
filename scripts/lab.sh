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

# shellcheck source=scripts/run_module.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/run_module.sh"
run_module lab.sh dbfleet.ops.lab "$@"
