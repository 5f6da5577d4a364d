"""What a rollout or a preview did, for people and machines.

- `table`: the final table every command prints (`stack  status  time  changes`).
- `text_diff`: the property-level diff of a preview (`dbfleet preview --diff`).
- `markdown`: the review report for a pull request: one section per stack,
  replacements and deletions called out first, secrets as ``[secret]``.
- `document`: the JSON document of `--json`.
- `exit_code`: the exit code CI can trust, aggregated over every stack.

Nothing here talks to the engine; it renders `results.StackResult`s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dbfleet.ops.changes import SECRET, SYMBOL, PropertyChange, ResourceChange, count_text
from dbfleet.ops.results import ERROR_STATUSES, ExitCode, StackResult
from dbfleet.ops.review import COMMENT_MARKER

DANGER = ("replace", "delete")
MAX_VALUE = 200  # characters of one value in a diff line


def exit_code(results: Iterable[StackResult], *, preview: bool) -> int:
    """1 when any stack failed or was blocked; else, for a preview, 2 when any stack
    has changes pending; else 0. An error always wins over pending changes, so a
    failing stack can never hide behind another stack's changes (or the reverse)."""
    results = list(results)
    if any(r.status in ERROR_STATUSES for r in results):
        return ExitCode.ERROR
    if preview and any(r.has_changes for r in results):
        return ExitCode.CHANGES
    return ExitCode.OK


@dataclass(frozen=True)
class Switchover:
    """A planned change of a group's primary: `primary_region` of replicas-<g> changes."""

    group: str
    old: str
    new: str

    def text(self) -> str:
        return (
            f"SWITCHOVER {self.group}: primary {self.old} -> {self.new} (Patroni hands over: "
            f"the old leader stops cleanly once {self.new} has every committed write; no "
            "committed write is lost; writes pause for a few seconds)"
        )


def switchovers(results: Iterable[StackResult]) -> list[Switchover]:
    """The switchovers a preview (or up) plans, from the replicas stacks' outputs."""
    found = []
    for r in results:
        if r.layer != "replicas":
            continue
        for c in r.output_changes:
            if c.path == "primary_region" and c.kind == "update" and c.old and c.new:
                found.append(Switchover(r.group, str(c.old), str(c.new)))
    return found


@dataclass(frozen=True)
class Finding:
    """One policy violation as a reader needs it: which policy, where, what is wrong,
    and how to fix it (the engine sends the policy's description first; that line is
    the same on every stack, so it is left out)."""

    level: str
    policy: str
    resource: str
    what: str
    fix: str


def findings(r: StackResult) -> list[Finding]:
    """The stack's policy violations, each once."""
    out: dict[tuple[str, str, str], Finding] = {}
    for p in r.policy:
        lines = [ln.strip() for ln in (p.message or "").splitlines() if ln.strip()]
        fix = next(
            (ln[len("Remediation:") :].strip() for ln in lines if ln.startswith("Remediation:")), ""
        )
        said = [ln for ln in lines if not ln.startswith("Remediation:")]
        # description first, then the violation's own message (when there is one)
        what = " ".join(said[1:]) if len(said) > 1 else (said[0] if said else "")
        key = (p.policy, p.resource, what)
        out.setdefault(key, Finding(p.level, p.policy, p.resource or r.stack, what, fix))
    return list(out.values())


# -- plain text -------------------------------------------------------------------------
def _changes_cell(r: StackResult) -> str:
    text = count_text(r.changes)
    if r.output_changes:
        outs = sorted({c.path.split(".")[0].split("[")[0] for c in r.output_changes})
        text = (text + "; " if text else "") + "outputs " + ", ".join(outs)
    return text or "-"


def table(results: Sequence[StackResult]) -> str:
    """`stack  status  time  changes`, one line per stack, then the reasons."""
    width = max([20, *(len(r.stack) for r in results)])
    lines = [s.text() for s in switchovers(results)]
    if lines:
        lines.append("")
    lines.append(f"{'stack':<{width}} {'status':<12} {'time':>7}  changes")
    for r in results:
        lines.append(f"{r.stack:<{width}} {r.status:<12} {r.seconds:>6.1f}s  {_changes_cell(r)}")
        for text in (r.note, r.error):
            for line in (text or "").splitlines():
                lines.append(f"    {line}")
        for f in findings(r):
            lines.append(f"    policy {f.level}: {f.policy} ({f.resource}): {f.what}")
            if f.fix:
                lines.append(f"      fix: {f.fix}")
    return "\n".join(lines)


def _value(value: Any) -> str:
    text = (
        value
        if isinstance(value, str) and value == SECRET
        else json.dumps(value, sort_keys=True, default=str)
    )
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _diff_line(c: PropertyChange) -> str:
    if c.kind == "add":
        return f"+ {c.path}: {_value(c.new)}"
    if c.kind == "delete":
        return f"- {c.path}: {_value(c.old)}"
    return f"~ {c.path}: {_value(c.old)} => {_value(c.new)}"


def _resource_lines(rc: ResourceChange, *, creates_in_full: bool = True) -> list[str]:
    head = f"{SYMBOL.get(rc.op, rc.op)} {rc.name} ({rc.detail or rc.type}) {rc.op}"
    if rc.op == "replace" and rc.replace_keys:
        head += f" — replaced because {', '.join(rc.replace_keys)} changed"
    lines = [head]
    if rc.drift:
        lines.append("    drift: what runs on the host no longer matches the state; up repairs it")
    if rc.op in ("create", "delete") and not creates_in_full:
        return lines
    lines += [f"    {_diff_line(c)}" for c in rc.diffs]
    return lines


def text_diff(results: Sequence[StackResult]) -> str:
    """Property-level diff of every stack that changes."""
    blocks = []
    for r in results:
        if not (r.resources or r.output_changes):
            continue
        lines = [f"{r.stack}:"]
        if r.note:
            lines.append(f"  ({r.note})")
        for rc in r.resources:
            lines += [f"  {line}" for line in _resource_lines(rc)]
        if r.output_changes:
            lines.append("  outputs:")
            lines += [f"    {_diff_line(c)}" for c in r.output_changes]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# -- markdown --------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fence(lines: list[str]) -> str:
    body = "\n".join(lines)
    fence = "```"
    while fence in body:
        fence += "`"
    return f"{fence}diff\n{body}\n{fence}"


def _headline(results: Sequence[StackResult]) -> str:
    code = exit_code(results, preview=True)
    changing = [r for r in results if r.has_changes]
    totals: dict[str, int] = {}
    for r in results:
        for op, n in r.changes.items():
            totals[op] = totals.get(op, 0) + n
    if code == ExitCode.ERROR:
        failed = [r.stack for r in results if r.status in ERROR_STATUSES]
        return f"**Preview failed** for {', '.join(failed)}" + (
            f"; {len(changing)} stack(s) change" if changing else ""
        )
    if not changing:
        return "**No changes.** Every stack matches the fleet file."
    counts = count_text(totals)
    return f"**{len(changing)} of {len(results)} stacks change**" + (
        f": {counts}" if counts else ""
    )


def _md_callouts(results: Sequence[StackResult]) -> list[str]:
    """What a reviewer must not miss, first: switchovers, replaces and deletes, and
    stacks that could not be previewed."""
    out: list[str] = []
    moves = switchovers(results)
    if moves:
        out += ["", "> [!IMPORTANT]", "> **Switchover** — the primary of a group moves:"]
        out += [
            f"> - **{s.group}**: `{s.old}` → `{s.new}` (the old primary is stopped, the new one "
            "promoted, every node follows it; writes pause meanwhile)"
            for s in moves
        ]
    danger = [(r, rc) for r in results for rc in r.resources if rc.op in DANGER]
    if danger:
        out += [
            "",
            "> [!CAUTION]",
            "> **Replaces and deletes** — data or running processes go away:",
        ]
        for r, rc in danger:
            why = f" (because {', '.join(rc.replace_keys)} changed)" if rc.replace_keys else ""
            out.append(f"> - **{rc.op.upper()}** `{rc.name}` in `{r.stack}`{why}")
    failed = [r for r in results if r.status in ERROR_STATUSES]
    if failed:
        out += ["", "> [!WARNING]", "> **Stacks that could not be previewed:**"]
        for r in failed:
            first = (r.error or r.note or r.status).splitlines()[0]
            out.append(f"> - `{r.stack}` ({r.status}): {_md_escape(first)}")
    return out


def _md_summary(results: Sequence[StackResult]) -> list[str]:
    out = [
        "",
        "| stack | result | create | update | replace | delete | outputs |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for r in results:
        c = r.changes
        cells = [str(c.get(op, "")) for op in ("create", "update", "replace", "delete")]
        cells[2] = f"**{cells[2]}**" if cells[2] else ""
        cells[3] = f"**{cells[3]}**" if cells[3] else ""
        outs = ", ".join(sorted({x.path.split(".")[0].split("[")[0] for x in r.output_changes}))
        out.append(f"| `{r.stack}` | {r.status} | " + " | ".join(cells) + f" | {outs} |")
    return out


def _md_what(rc: ResourceChange) -> str:
    if rc.drift:
        what = "drift: the host no longer matches the state"
    elif rc.op == "create":
        what = "new"
    elif rc.op == "delete":
        what = "removed"
    else:
        what = ", ".join(f"`{c.path}`" for c in rc.diffs[:8]) + (" …" if len(rc.diffs) > 8 else "")
    if rc.replace_keys:
        what += f" (replace: {', '.join(rc.replace_keys)})"
    return what


def _md_resources(r: StackResult) -> list[str]:
    out = ["", "| change | resource | kind | what changes |", "|---|---|---|---|"]
    for rc in r.resources:
        op = f"**{rc.op.upper()}**" if rc.op in DANGER else rc.op
        out.append(
            f"| {SYMBOL.get(rc.op, rc.op)} {op} | `{rc.name}` | "
            f"{_md_escape(rc.detail or rc.type)} | {_md_what(rc)} |"
        )
    detail = [line for rc in r.resources for line in _resource_lines(rc)]
    return [
        *out,
        "",
        "<details><summary>property diff</summary>",
        "",
        _fence(detail),
        "",
        "</details>",
    ]


def _md_stack(r: StackResult) -> list[str]:
    """One stack's section: note, error, resources, outputs, policy findings."""
    out = ["", f"### `{r.stack}` — {r.status}"]
    if r.note:
        out.append(f"_{_md_escape(r.note)}_")
    if r.error:
        out += ["", _fence([f"! {line}" for line in r.error.splitlines()])]
    if r.resources:
        out += _md_resources(r)
    if r.output_changes:
        out += ["", "Stack outputs:", "", _fence([_diff_line(c) for c in r.output_changes])]
    if r.policy:
        out += ["", "Policies:"]
        out += [
            f"- **{f.level}** `{f.policy}` on `{f.resource}`: {_md_escape(f.what)}"
            + (f" — fix: {_md_escape(f.fix)}" if f.fix else "")
            for f in findings(r)
        ]
    return out


def markdown(
    results: Sequence[StackResult], *, title: str = "dbfleet preview", context: str = ""
) -> str:
    """The review report: a summary table, the dangerous changes first, then one
    section per stack (stacks without changes or findings are listed, not detailed)."""
    out = [COMMENT_MARKER, f"## {title}", "", _headline(results)]
    if context:
        out += ["", context]
    out += _md_callouts(results)
    out += _md_summary(results)
    quiet = [
        r.stack
        for r in results
        if not r.has_changes and r.status not in ERROR_STATUSES and not r.policy
    ]
    for r in results:
        if r.stack not in quiet:
            out += _md_stack(r)
    if quiet:
        out += ["", f"No changes: {', '.join(f'`{s}`' for s in quiet)}."]
    return "\n".join(out) + "\n"


# -- JSON ------------------------------------------------------------------------------
def document(
    results: Sequence[StackResult],
    *,
    command: str,
    code: int,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    totals: dict[str, int] = {}
    for r in results:
        for op, n in r.changes.items():
            totals[op] = totals.get(op, 0) + n
    return {
        "version": 1,
        "command": command,
        "exit_code": code,
        "changed_stacks": [r.stack for r in results if r.has_changes],
        "failed_stacks": [r.stack for r in results if r.status in ERROR_STATUSES],
        "totals": totals,
        "stacks": [r.to_json() for r in results],
        # Only a preview knows which outputs change (up records no output diff).
        **(
            {"switchovers": [vars(s) for s in switchovers(results)]} if command == "preview" else {}
        ),
        **dict(extra or {}),
    }


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Belt and braces: any known secret value that reached a report becomes [secret]."""
    for value in sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True):
        text = text.replace(value, SECRET)
    return text
