#!/usr/bin/env bash
# CI review of the fleet, run by .github/workflows/dbfleet.yml (and by hand).
#
#   scripts/ci_review.sh pr      preview the stacks the pull request affects (compared
#                                with $DBFLEET_BASE_REF, default origin/main) with
#                                --diff, write the Markdown and JSON reports, and post
#                                or update one comment on the pull request
#   scripts/ci_review.sh drift   preview every stack; fail when anything differs from
#                                what is deployed (exit 2 from preview) or errors (1)
#
# Reports go to $DBFLEET_REVIEW_DIR (default .dbfleet/review). Set
# DBFLEET_REVIEW_DRY_RUN=1 to write the comment to that directory instead of
# posting it. Exit: pr — 0 when the preview ran (changes or not), 1 when it failed;
# drift — 0 no drift, 2 drift, 1 error.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh

mode="${1:-pr}"
out="${DBFLEET_REVIEW_DIR:-$DBFLEET_HOME/review}"
mkdir -p "$out"
md="$out/preview.md"
json="$out/preview.json"

preview() {
  # preview exits 0 (no changes), 2 (changes pending) or 1 (error); keep the code.
  local code=0
  dbfleet preview "$@" --diff --markdown "$md" --json "$json" --quiet || code=$?
  return "$code"
}

case "$mode" in
  pr)
    base="${DBFLEET_BASE_REF:-origin/${GITHUB_BASE_REF:-main}}"
    # Through a file, not a process substitution: if the scope cannot be computed
    # (say the base ref was not fetched), the job must fail, not report "no stack".
    python -m dbfleet.ops.review scope --base "$base" >"$out/scope.txt"
    mapfile -t args <"$out/scope.txt"
    code=0
    if [ "${#args[@]}" -eq 0 ]; then
      printf '%s\n' "<!-- dbfleet-preview -->" "## dbfleet preview" "" \
        "**No stack is affected** by this change (compared with \`$base\`)." >"$md"
      echo '{"version": 1, "command": "preview", "exit_code": 0, "stacks": []}' >"$json"
    else
      echo "ci_review: dbfleet preview ${args[*]}"
      preview "${args[@]}" || code=$?
    fi
    if [ "$code" -eq 1 ] && [ ! -s "$md" ]; then
      printf '%s\n' "<!-- dbfleet-preview -->" "## dbfleet preview" "" \
        "**The preview could not run.** See the workflow log." >"$md"
    fi
    if [ -n "${DBFLEET_REVIEW_DRY_RUN:-}" ]; then
      python -m dbfleet.ops.review comment --body "$md" --dry-run "$out/comment.md"
    else
      python -m dbfleet.ops.review comment --body "$md"
    fi
    case "$code" in
      0 | 2) exit 0 ;;
      *) echo "ci_review: the preview failed (exit $code)" >&2; exit 1 ;;
    esac
    ;;
  drift)
    code=0
    preview || code=$?
    case "$code" in
      0) echo "ci_review: no drift: every stack matches what is deployed" ;;
      2) echo "::error::drift: stacks differ from the fleet file or from their hosts (see $md)" >&2 ;;
      *) echo "::error::the drift check failed (exit $code)" >&2 ;;
    esac
    exit "$code"
    ;;
  *)
    echo "usage: scripts/ci_review.sh pr|drift" >&2
    exit 1
    ;;
esac
