#!/usr/bin/env bash
# dbfleet's LOCAL secrets server (OpenBao, Vault API) for the `local` target.
#
#   scripts/vault.sh start    start (or re-use) the server, initialise it the first time, unseal it
#   scripts/vault.sh stop     stop the server started by start; the data is kept
#   scripts/vault.sh status   one line; exit 0 up and unsealed, 2 up but sealed/uninitialised, 3 down
#   scripts/vault.sh env      prints `export VAULT_ADDR=...` / `export VAULT_TOKEN=...` for eval
#   scripts/vault.sh purge    stop, then delete $DBFLEET_HOME/vault (every secret in it is lost)
#
# The work is done by dbfleet/ops/localvault.py (its docstring describes the files under
# $DBFLEET_HOME, what a clone remembers there, and every variable). This wrapper only picks
# the Python that has the project's dependencies.
#
# Environment:
#   DBFLEET_HOME        the project's state directory (default: .dbfleet in this clone)
#   BAO_BIN             the `bao` executable (default: `bao` on PATH)
#   DBFLEET_VAULT_ADDR  default: the address the last `start` remembered, else
#                       http://127.0.0.1:8200; must be http:// on a loopback address
#   DBFLEET_VAULT_CLUSTER_ADDR
#                       raft cluster listener, default https://<same host>:<port+1>
#   PYTHON              the Python to run (default: this clone's .venv/bin/python, else python3)
#
# Real users do not need this script: they point VAULT_ADDR/VAULT_TOKEN at their own Vault.
set -euo pipefail

# shellcheck source=scripts/run_module.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/run_module.sh"
run_module vault.sh dbfleet.ops.localvault "$@"
