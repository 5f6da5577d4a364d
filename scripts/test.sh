#!/usr/bin/env bash
# Runs dbfleet's tests: `unit`, `integration`, or (default) all of them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
case "${1:-all}" in
  unit) exec python -m pytest tests/unit -q -p no:cacheprovider ;;
  integration) exec python -m pytest tests/integration -q -p no:cacheprovider -m integration ;;
  all) exec python -m pytest tests -q -p no:cacheprovider --durations=25 ;;
  *) echo "usage: scripts/test.sh [unit|integration|all]" >&2; exit 2 ;;
esac
