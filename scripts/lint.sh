#!/usr/bin/env bash
# Lints everything `make test` lints (CI cannot skip it): Python with ruff (rules,
# complexity limits and formatting, see pyproject.toml), every shell script (with
# the shellcheck tool), and the CI workflow with actionlint. Exit 1 on any finding.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
status=0
step() { # name, command...
  local name="$1"
  shift
  if "$@"; then
    printf 'lint: %s: ok\n' "$name"
  else
    printf 'lint: %s: FAILED\n' "$name" >&2
    status=1
  fi
}
# Shell scripts: tracked *.sh files and tracked files whose first line names bash/sh.
mapfile -t shell_files < <(
  git ls-files -z | while IFS= read -r -d '' f; do
    case "$f" in
      *.sh) printf '%s\n' "$f" ;;
      *) [ -f "$f" ] && head -n1 "$f" 2>/dev/null | grep -qE '^#!.*\b(ba)?sh\b' && printf '%s\n' "$f" ;;
    esac
  done
)
step "ruff check" ruff check --quiet .
step "ruff format" ruff format --check --quiet .
step "shellcheck (${#shell_files[@]} scripts)" shellcheck -x "${shell_files[@]}"
step "actionlint" "$ACTIONLINT_BIN" .github/workflows/*.yml
exit "$status"
