#!/usr/bin/env bash
# CI review of the fleet, run by .github/workflows/dbfleet.yml (and by hand).
#
#   scripts/ci_review.sh groups  the groups the pull request affects (compared with
#                                $DBFLEET_BASE_REF, default origin/main) as one JSON
#                                list on stdout and as `groups=` in $GITHUB_OUTPUT (the
#                                matrix of the per-group review jobs); posts or updates
#                                the summary comment (which groups, or no stack affected)
#   scripts/ci_review.sh pr [GROUP]
#                                preview the stacks the pull request affects with
#                                --diff, write the Markdown and JSON reports, and post
#                                or update one comment on the pull request. With GROUP
#                                (or $DBFLEET_REVIEW_GROUP): that group's stacks only,
#                                with the group's read-only Vault token from
#                                $DBFLEET_REVIEW_TOKEN (required; `dbfleet token GROUP
#                                --read-only` mints one), in the group's own comment
#   scripts/ci_review.sh drift   preview every stack; fail when anything differs from
#                                what is deployed (exit 2 from preview) or errors (1)
#
# Reports go to $DBFLEET_REVIEW_DIR (default .dbfleet/review; a group's to its GROUP/
# subdirectory). Set DBFLEET_REVIEW_DRY_RUN=1 to write the comment to that directory
# instead of posting it. Exit: groups — 0, 1 when the scope cannot be computed; pr — 0
# when the preview ran (changes or not), 1 when it failed or GROUP has no token; drift —
# 0 no drift, 2 drift, 1 error.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh

mode="${1:-pr}"
group="${2:-${DBFLEET_REVIEW_GROUP:-}}"
out="${DBFLEET_REVIEW_DIR:-$DBFLEET_HOME/review}"
base="${DBFLEET_BASE_REF:-origin/${GITHUB_BASE_REF:-main}}"
scope_args=()
comment_args=()
if [ "$mode" = pr ] && [ -n "$group" ]; then
  # It names a directory and a comment: a group name as the fleet file allows it.
  if ! [[ "$group" =~ ^[a-z]([a-z0-9-]*[a-z0-9])?$ ]]; then
    echo "ci_review: $group is not a group name" >&2
    exit 1
  fi
  # A group's review runs with that group's read-only token, never with the runner's
  # (which scripts/env.sh may have set from DBFLEET_HOME): it can read and decrypt
  # this group's state and secrets, and change nothing.
  if [ -z "${DBFLEET_REVIEW_TOKEN:-}" ]; then
    echo "ci_review: no read-only Vault token for group $group: set DBFLEET_REVIEW_TOKEN (in CI the secret DBFLEET_REVIEW_TOKEN of environment dbfleet-review-$group; mint one with \`dbfleet token $group --read-only\`)" >&2
    exit 1
  fi
  export VAULT_TOKEN="$DBFLEET_REVIEW_TOKEN"
  unset DBFLEET_REVIEW_TOKEN
  out="$out/$group"
  scope_args=(--group "$group")
  comment_args=(--group "$group")
fi
mkdir -p "$out"
md="$out/preview.md"
json="$out/preview.json"

comment() {
  if [ -n "${DBFLEET_REVIEW_DRY_RUN:-}" ]; then
    python -m dbfleet.ops.review comment --body "$1" "${comment_args[@]}" --dry-run "$out/comment.md"
  else
    python -m dbfleet.ops.review comment --body "$1" "${comment_args[@]}"
  fi
}

preview() {
  # preview exits 0 (no changes), 2 (changes pending) or 1 (error); keep the code.
  local code=0
  dbfleet preview "$@" --diff --markdown "$md" --json "$json" --quiet || code=$?
  return "$code"
}

case "$mode" in
  groups)
    # Through a file, as below: a scope that cannot be computed fails the job.
    python -m dbfleet.ops.review groups --base "$base" --summary "$out/summary.md" >"$out/groups.json"
    IFS= read -r groups <"$out/groups.json"
    echo "$groups"
    if [ -n "${GITHUB_OUTPUT:-}" ]; then
      echo "groups=$groups" >>"$GITHUB_OUTPUT"
    fi
    comment "$out/summary.md"
    ;;
  pr)
    # Through a file, not a process substitution: if the scope cannot be computed
    # (say the base ref was not fetched), the job must fail, not report "no stack".
    python -m dbfleet.ops.review scope --base "$base" "${scope_args[@]}" >"$out/scope.txt"
    mapfile -t args <"$out/scope.txt"
    code=0
    if [ "${#args[@]}" -eq 0 ]; then
      printf '%s\n' "<!-- dbfleet-preview -->" "## dbfleet preview${group:+ of group $group}" "" \
        "**No stack${group:+ of group $group} is affected** by this change (compared with \`$base\`)." >"$md"
      echo '{"version": 1, "command": "preview", "exit_code": 0, "stacks": []}' >"$json"
    else
      echo "ci_review: dbfleet preview ${args[*]}"
      preview "${args[@]}" || code=$?
    fi
    if [ "$code" -eq 1 ] && [ ! -s "$md" ]; then
      printf '%s\n' "<!-- dbfleet-preview -->" "## dbfleet preview" "" \
        "**The preview could not run.** See the workflow log." >"$md"
    fi
    comment "$md"
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
    echo "usage: scripts/ci_review.sh groups | pr [GROUP] | drift" >&2
    exit 1
    ;;
esac
