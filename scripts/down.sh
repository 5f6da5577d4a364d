#!/usr/bin/env bash
# `make down`: destroy every stack in reverse order, then stop the local secrets
# server that `make up` started. The fleet's secrets stay in the server's storage
# (under $DBFLEET_HOME/vault) so a later `make up` keeps the same passwords.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
if [ -n "${DBFLEET_LOCAL_VAULT:-}" ] && [ -f "$DBFLEET_HOME/vault/init.json" ]; then
  bash scripts/vault.sh start >/dev/null
  eval "$(bash scripts/vault.sh env)"
fi
dbfleet destroy --yes
if [ -n "${DBFLEET_LOCAL_VAULT:-}" ]; then
  bash scripts/vault.sh stop
fi
