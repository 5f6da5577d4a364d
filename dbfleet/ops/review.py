"""CI review of a pull request: which stacks it affects, and one comment that says how.

Used by `scripts/ci_review.sh` (and `.github/workflows/dbfleet.yml`):

    python -m dbfleet.ops.review scope --base origin/main [--group G]
        prints the `dbfleet preview` arguments for the stacks the change affects
        (of group G only, with --group), one per line (nothing when no stack is
        affected), and why on stderr
    python -m dbfleet.ops.review groups --base origin/main [--summary FILE]
        prints the affected groups as one JSON list (`[]` when none), the matrix of
        the workflow's per-group review jobs; FILE gets the summary comment
    python -m dbfleet.ops.review comment --body report.md [--group G]
        creates dbfleet's comment on the pull request, or updates it in place when
        there is one already (found by its hidden marker): one summary comment, and
        one comment per group previewed with --group

Which stacks a change affects, from the paths it touches:

- the fleet file: the groups whose definition changed (all groups when a
  fleet-wide key — name, target, network — changed); a group removed from it makes
  the preview cover every group of the file, which is when `dbfleet preview` lists
  the removed group's deployed stacks as orphaned;
- `stacks/Pulumi.<layer>-<group>.yaml`: that stack (stack config files are per clone
  and ignored by git; a team that shares them adds them with `git add -f`);
- `dbfleet/program/layers/<layer>.py`: that layer and the layers above it, in every group
  (they read its outputs);
- any other program code (`components/`, `dbfleet/` except the operator's
  `dbfleet/ops/`, `Pulumi.yaml`, `__main__.py`, dependencies) and the policy pack: every stack;
- anything else (docs, tests, CI, scripts): no stack.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dbfleet.model.spec import _check_group_name, default_spec_path
from dbfleet.model.stackname import LAYERS, StackNameError, parse_stack_name

FLEET_FILE = "stacks/fleet.yaml"
# The hidden first line of dbfleet's report: how the comment is found again. A group's
# own preview (the per-group review jobs) has its own marker, so each job updates its
# group's comment and none overwrites another's or the summary.
COMMENT_MARKER = "<!-- dbfleet-preview -->"
_MARKER_PREFIX = "<!-- dbfleet-preview"


def comment_marker(group: str | None = None) -> str:
    """The hidden first line of the summary comment, or of group `group`'s."""
    return COMMENT_MARKER if group is None else f"<!-- dbfleet-preview {group} -->"


# Code only the operator tool runs (`dbfleet/ops/`, and `python -m dbfleet`, which
# starts it): changing it changes no stack. Decided by path, so a new operator
# module needs no list kept by hand.
OPERATOR_PATHS = ("dbfleet/ops/", "dbfleet/__main__.py")
PROGRAM_FILES = frozenset({"Pulumi.yaml", "__main__.py", "requirements.lock", "pyproject.toml"})
PROGRAM_DIRS = ("components/", "dbfleet/", "policies/")
# GitHub refuses comments longer than this many characters.
MAX_COMMENT = 65_000


@dataclass
class Scope:
    """What to preview: `groups` (None: all) and `layers` (None: all), and why."""

    groups: set[str] | None = field(default_factory=set)
    layers: set[str] | None = field(default_factory=set)
    reasons: list[str] = field(default_factory=list)
    removed_groups: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.groups is not None and not self.groups

    def add(self, groups: set[str] | None, layers: set[str] | None, reason: str) -> None:
        if groups is None or self.groups is None:
            self.groups = None
        else:
            self.groups |= groups
        if layers is None or self.layers is None:
            self.layers = None
        else:
            self.layers |= layers
        self.reasons.append(reason)

    def affected_groups(self, known_groups: Iterable[str]) -> list[str]:
        """The affected groups of `known_groups` (the fleet file's), in its order."""
        if self.empty:
            return []
        return [g for g in known_groups if self.groups is None or g in self.groups]

    def preview_args(self, known_groups: Iterable[str], only: str | None = None) -> list[str]:
        """`dbfleet preview` arguments: groups (in the fleet file's order) and layers;
        with `only`, that group alone (nothing when it is not affected).
        Every group is named even when all are affected: no arguments at all means
        "no stack is affected" to scripts/ci_review.sh."""
        groups = self.affected_groups(known_groups)
        if only is not None:
            groups = [g for g in groups if g == only]
        if not groups:
            return []
        args = list(groups)
        if self.layers is not None and set(self.layers) != set(LAYERS):
            # A layer's downstream layers read its outputs: preview them too.
            first = min(LAYERS.index(layer) for layer in self.layers)
            for layer in LAYERS[first:]:
                args += ["--layer", layer]
        return args


def _groups_of(text: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(groups, fleet-wide keys) of a fleet file's raw YAML; empty when unreadable."""
    try:
        data = yaml.safe_load(text or "") or {}
    except yaml.YAMLError:
        return {}, {"unparseable": text}
    if not isinstance(data, Mapping):
        return {}, {"unparseable": text}
    groups = data.get("groups") if isinstance(data.get("groups"), Mapping) else {}
    rest = {k: v for k, v in data.items() if k != "groups"}
    return dict(groups), rest


def fleet_scope(base_text: str | None, head_text: str | None, scope: Scope) -> None:
    base_groups, base_rest = _groups_of(base_text)
    head_groups, head_rest = _groups_of(head_text)
    if base_rest != head_rest:
        changed = sorted(
            set(base_rest) ^ set(head_rest)
            | {k for k in base_rest if base_rest.get(k) != head_rest.get(k)}
        )
        scope.add(None, None, f"{FLEET_FILE}: fleet-wide settings changed ({', '.join(changed)})")
    changed_groups = {
        g for g in set(base_groups) | set(head_groups) if base_groups.get(g) != head_groups.get(g)
    }
    removed = sorted(g for g in changed_groups if g not in head_groups)
    scope.removed_groups += removed
    present = {g for g in changed_groups if g in head_groups}
    if present:
        scope.add(present, None, f"{FLEET_FILE}: group(s) {', '.join(sorted(present))} changed")
    if removed:
        # Their stacks stay deployed until destroyed: a preview of the whole file lists
        # them as orphaned, with the command that removes them.
        scope.add(
            None,
            None,
            f"{FLEET_FILE}: group(s) {', '.join(removed)} removed (their stacks stay until "
            f"`dbfleet destroy {' '.join(removed)} --yes`)",
        )


def path_scope(path: str, scope: Scope) -> None:
    name = Path(path).name
    if (
        path.startswith("stacks/")
        and name.startswith("Pulumi.")
        and name.endswith((".yaml", ".yml"))
    ):
        stack = name[len("Pulumi.") :].rsplit(".", 1)[0]
        try:
            parsed = parse_stack_name(stack)
        except StackNameError:
            return
        scope.add({parsed.group}, {parsed.layer}, f"{path}: config of {stack}")
        return
    if path.startswith("dbfleet/program/layers/"):
        layer = Path(path).stem
        if layer in LAYERS:
            scope.add(None, {layer}, f"{path}: the {layer} layer")
        else:
            scope.add(None, None, f"{path}: code every layer uses")
        return
    if path.startswith(OPERATOR_PATHS + ("tests/", "docs/", ".github/", "scripts/", "bench/")):
        return
    if path in PROGRAM_FILES or path.startswith(PROGRAM_DIRS):
        scope.add(None, None, f"{path}: program code")


def affected(
    changed: Iterable[str],
    *,
    base_fleet: str | None,
    head_fleet: str | None,
    fleet_path: str = FLEET_FILE,
) -> Scope:
    scope = Scope()
    for path in changed:
        if path == fleet_path:
            fleet_scope(base_fleet, head_fleet, scope)
        else:
            path_scope(path, scope)
    return scope


# -- git ------------------------------------------------------------------------------
def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def git_scope(base: str, repo: Path, fleet_path: str = FLEET_FILE) -> Scope:
    merge_base = _git("merge-base", base, "HEAD", cwd=repo).strip()
    changed = [
        p for p in _git("diff", "--name-only", merge_base, "HEAD", cwd=repo).splitlines() if p
    ]
    try:
        base_fleet = _git("show", f"{merge_base}:{fleet_path}", cwd=repo)
    except subprocess.CalledProcessError:
        base_fleet = None
    head = repo / fleet_path
    head_fleet = head.read_text() if head.is_file() else None
    return affected(changed, base_fleet=base_fleet, head_fleet=head_fleet, fleet_path=fleet_path)


# -- the comment ----------------------------------------------------------------------
Transport = Callable[[str, str, Mapping[str, Any] | None], tuple[int, Any]]


def http_transport(token: str, api: str) -> Transport:
    def call(method: str, path: str, body: Mapping[str, Any] | None) -> tuple[int, Any]:
        req = urllib.request.Request(
            api.rstrip("/") + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "Content-Type": "application/json",
                "User-Agent": "dbfleet-review",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    return call


def comment_body(report: str, group: str | None = None) -> str:
    """The comment: its marker (the summary's, or group `group`'s) as the first line,
    in place of any marker the report starts with, then the report."""
    first, _sep, rest = report.partition("\n")
    if first.startswith(_MARKER_PREFIX):
        report = rest
    body = f"{comment_marker(group)}\n{report}"
    if len(body) > MAX_COMMENT:
        note = "\n\n_…report truncated; the full report is in the workflow run's artifacts._\n"
        body = body[: MAX_COMMENT - len(note)] + note
    return body


def upsert_comment(transport: Transport, repo: str, pr: int, body: str) -> tuple[str, int]:
    """Updates dbfleet's comment on the PR that has the same marker (first line) as
    `body`, or creates it. Returns (action, comment id)."""
    marker = body.partition("\n")[0]
    page = 1
    while True:
        status, comments = transport(
            "GET", f"/repos/{repo}/issues/{pr}/comments?per_page=100&page={page}", None
        )
        if status != 200:
            raise RuntimeError(f"listing comments of {repo}#{pr} failed: HTTP {status}: {comments}")
        for c in comments:
            if (c.get("body") or "").partition("\n")[0].strip() == marker:
                status, updated = transport(
                    "PATCH", f"/repos/{repo}/issues/comments/{c['id']}", {"body": body}
                )
                if status != 200:
                    raise RuntimeError(
                        f"updating comment {c['id']} failed: HTTP {status}: {updated}"
                    )
                return "updated", int(c["id"])
        if len(comments) < 100:
            break
        page += 1
    status, created = transport("POST", f"/repos/{repo}/issues/{pr}/comments", {"body": body})
    if status != 201:
        raise RuntimeError(f"commenting on {repo}#{pr} failed: HTTP {status}: {created}")
    return "created", int(created["id"])


def pr_number(event_path: str | None) -> int | None:
    if not event_path or not Path(event_path).is_file():
        return None
    event = json.loads(Path(event_path).read_text())
    number = (event.get("pull_request") or {}).get("number") or event.get("number")
    return int(number) if number else None


# -- command line ---------------------------------------------------------------------
def _scope_of(args: argparse.Namespace) -> tuple[Scope, list[str]]:
    """The change's scope and the groups of the fleet file as it is now."""
    repo = Path(args.repo_dir).resolve()
    spec = default_spec_path()
    try:
        fleet_path = str(spec.resolve().relative_to(repo))
    except ValueError:
        fleet_path = FLEET_FILE
    scope = git_scope(args.base, repo, fleet_path)
    groups_now, _ = _groups_of(spec.read_text() if spec.is_file() else "")
    for reason in scope.reasons or ["no file that a stack is built from changed"]:
        print(f"review: {reason}", file=sys.stderr)
    return scope, [str(g) for g in groups_now]


def _scope_cmd(args: argparse.Namespace) -> int:
    scope, groups_now = _scope_of(args)
    for arg in scope.preview_args(groups_now, only=args.group):
        print(arg)
    return 0


def summary_report(groups: list[str], scope: Scope, base: str) -> str:
    """The summary comment: no stack affected, or which groups each get a comment."""
    lines = [COMMENT_MARKER, "## dbfleet preview", ""]
    if not groups:
        return "\n".join(
            [*lines, f"**No stack is affected** by this change (compared with `{base}`)."]
        )
    lines += [
        (
            f"Affected group(s): {', '.join(f'`{g}`' for g in groups)} (compared with `{base}`). "
            "Each group is previewed by its own job with that group's read-only Vault token; "
            "its report is the comment of that group below."
        ),
        "",
        *(f"- {reason}" for reason in scope.reasons),
    ]
    return "\n".join(lines)


def _groups_cmd(args: argparse.Namespace) -> int:
    scope, groups_now = _scope_of(args)
    groups = scope.affected_groups(groups_now)
    for g in groups:
        # The names become job names, Vault token secrets' environments and file
        # names in CI: only what the fleet file accepts as a group name goes on.
        _check_group_name(g)
    if args.summary:
        Path(args.summary).write_text(summary_report(groups, scope, args.base) + "\n")
    print(json.dumps(groups, separators=(",", ":")))
    return 0


def _comment_cmd(args: argparse.Namespace) -> int:
    body = comment_body(Path(args.body).read_text(), args.group)
    if args.dry_run:
        Path(args.dry_run).write_text(body)
        print(f"review: comment written to {args.dry_run} (dry run)")
        return 0
    token = os.environ.get("GITHUB_TOKEN")
    repo = args.repo or os.environ.get("GITHUB_REPOSITORY")
    pr = args.pr or pr_number(os.environ.get("GITHUB_EVENT_PATH"))
    if not (token and repo and pr):
        missing = [
            n
            for n, v in (
                ("GITHUB_TOKEN", token),
                ("GITHUB_REPOSITORY", repo),
                ("pull request number", pr),
            )
            if not v
        ]
        print(f"review: cannot comment, missing {', '.join(missing)}", file=sys.stderr)
        return 1
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    action, cid = upsert_comment(http_transport(token, api), repo, int(pr), body)
    print(f"review: {action} comment {cid} on {repo}#{pr}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbfleet.ops.review", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("scope", help="print the preview arguments for the stacks a change affects")
    p.add_argument(
        "--base", required=True, help="the git ref the change is compared with (e.g. origin/main)"
    )
    p.add_argument("--repo-dir", default=".", help="the repository (default: .)")
    p.add_argument("--group", help="only this group's stacks (a per-group review job)")
    p.set_defaults(handler=_scope_cmd)
    p = sub.add_parser(
        "groups", help="print the affected groups as a JSON list (the review jobs' matrix)"
    )
    p.add_argument(
        "--base", required=True, help="the git ref the change is compared with (e.g. origin/main)"
    )
    p.add_argument("--repo-dir", default=".", help="the repository (default: .)")
    p.add_argument("--summary", metavar="FILE", help="write the summary comment's report to FILE")
    p.set_defaults(handler=_groups_cmd)
    p = sub.add_parser("comment", help="create or update dbfleet's comment on the pull request")
    p.add_argument("--body", required=True, help="the Markdown report")
    p.add_argument("--repo", help="owner/name (default: $GITHUB_REPOSITORY)")
    p.add_argument("--pr", type=int, help="pull request number (default: from $GITHUB_EVENT_PATH)")
    p.add_argument("--group", help="the comment of this group's preview (default: the summary)")
    p.add_argument(
        "--dry-run", metavar="FILE", help="write the comment to FILE instead of posting it"
    )
    p.set_defaults(handler=_comment_cmd)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (RuntimeError, ValueError, subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        print(f"review: {detail.strip()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
