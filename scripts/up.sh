#!/usr/bin/env bash
# `make up`: start the local secrets server, bring up every stack of the fleet in
# order, prove that writes in each group are read back in every region of that
# group (and in no other), and print the endpoints.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
t0=$SECONDS
if [ -n "${DBFLEET_LOCAL_VAULT:-}" ]; then
  bash scripts/vault.sh start
  eval "$(bash scripts/vault.sh env)"
fi
dbfleet validate
dbfleet up
dbfleet prove
dbfleet endpoints
echo "make up: done in $((SECONDS - t0)) s. Try: source scripts/env.sh && dbfleet endpoints"
