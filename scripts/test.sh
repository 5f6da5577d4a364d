#!/usr/bin/env bash
# Runs dbfleet's tests: `unit`, `integration`, or (default) all of them; any further
# arguments go to pytest.
#
# Integration tests run on parallel workers (pytest-xdist): most of their time is spent
# waiting on processes, not on CPU. A worker takes a whole module at a time (or one of
# the few tests that bring up a fleet of their own), the heaviest first; see
# tests/conftest.py, and docs/development.md for why it is safe. DBFLEET_TEST_WORKERS
# sets the number of workers (0: none, everything in this process).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
workers="${DBFLEET_TEST_WORKERS:-3}"
parallel=(-n "$workers")
what="${1:-all}"
[ "$#" -gt 0 ] && shift
case "$what" in
  unit) exec python -m pytest tests/unit -q -p no:cacheprovider "$@" ;;
  integration) exec python -m pytest tests/integration -q -p no:cacheprovider -m integration "${parallel[@]}" "$@" ;;
  all) exec python -m pytest tests -q -p no:cacheprovider --durations=25 "${parallel[@]}" "$@" ;;
  *) echo "usage: scripts/test.sh [unit|integration|all] [pytest arguments]" >&2; exit 2 ;;
esac
