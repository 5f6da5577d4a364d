"""Ordered rollouts across a fleet's stacks, on the Pulumi Automation API.

Layers of one group run in dependency order (reverse for destroy) and a group
stops at its first failed stack; different groups run in parallel, each in its
own thread. Three actions:

- ``up``: apply each stack; a stack whose upstream is neither deployed nor part of
  this run is not attempted ("blocked").
- ``destroy``: destroy each stack, last layer first; a stack that does not exist is
  "absent"; a layer whose downstream is still deployed (and not being destroyed in
  the same run) is "blocked", so `--layer accounts` can never pull the floor from
  under running databases.
- ``preview``: plan each stack. When an upstream stack of the same run plans to
  change its outputs, the downstream stack is previewed against those planned
  outputs in a scratch copy of the state (`dbfleet.ops.planned`), which is what `up`
  would give it.

Every stack ends as one `StackResult`; nothing here prints (progress goes to a
`Progress`, see `dbfleet.ops.progress`).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pulumi import automation as auto

from dbfleet import PROJECT_ROOT
from dbfleet.model.stackname import LAYERS, UPSTREAM, downstream, parse_stack_name
from dbfleet.ops import locks, planned, workspace
from dbfleet.ops.changes import (
    NO_CHANGE_OPS,
    REPLACE_OPS,
    STACK_TYPE,
    ChangeCollector,
    count_text,
    mask,
    outputs_differ,
    urn_name,
)
from dbfleet.ops.progress import Progress
from dbfleet.ops.results import ERROR_STATUSES, StackResult, Status

PROJECT_DIR_ENV = "DBFLEET_PROJECT_DIR"
POLICY_DIR = "policies"


def _backport_log_watcher_fix() -> None:
    """pulumi/pulumi#16095, fixed upstream in #19539 (v3.171) but not in our pinned
    v3.79.0: with `on_event`, the Automation API tails the engine's event log in a
    non-daemon thread that stops only at the engine's cancel event. When the CLI
    fails before the engine starts (a bad passphrase, a locked stack), that event
    never comes and the thread keeps the process from ever exiting. As upstream
    does, `_cleanup` (run once the CLI has exited, so the log is complete) now tells
    the watcher to stop as soon as it has read everything.

    It also never parses half an event: the engine writes a long event line in more
    than one write, and the upstream watcher, reading a line the engine had not
    finished, died on the JSON error — every later event (the summary included) was
    lost and the stack reported "summary event never found". A line is read on until
    its newline has been written."""
    from pulumi.automation import _stack

    if getattr(_stack, "_dbfleet_patched", False) or not hasattr(_stack, "_watch_logs"):
        return

    def _watch_logs(filename: str, callback: Callable) -> None:
        me = threading.current_thread()
        pending = ""
        with open(filename, encoding="utf-8") as f:
            while True:
                chunk = f.readline()
                pending += chunk
                if pending.endswith("\n"):
                    line, pending = pending, ""
                    if line.strip():
                        event = _parse(line)
                        callback(event)
                        if event.cancel_event:
                            return
                    continue
                if chunk:
                    continue  # the end of what is written so far: read on
                # Nothing new, or the engine is still writing this line. Once the CLI
                # has exited (stop), the log is complete: an unterminated rest is its
                # last line, or the torn last line of a killed CLI.
                if getattr(me, "dbfleet_stop", False):
                    try:
                        event = _parse(pending) if pending.strip() else None
                    except ValueError:
                        event = None
                    if event is not None:
                        callback(event)
                    return
                time.sleep(0.05)

    def _parse(line: str):
        return auto.events.EngineEvent.from_json(json.loads(line))

    def _cleanup(temp_dir, thread, on_exit_fn=None) -> None:  # pulumi's own signature
        if on_exit_fn:
            on_exit_fn()
        if thread:
            thread.dbfleet_stop = True
            thread.join(5)
        if temp_dir:
            temp_dir.cleanup()

    _stack._watch_logs = _watch_logs
    _stack._cleanup = _cleanup
    _stack._dbfleet_patched = True


_backport_log_watcher_fix()


def project_dir() -> Path:
    """The directory holding Pulumi.yaml (tests run a copy of the project)."""
    return Path(os.environ.get(PROJECT_DIR_ENV) or PROJECT_ROOT)


def policy_pack_dir() -> Path | None:
    """The CrossGuard pack of the project, when there is one (`policies/PulumiPolicy.yaml`)."""
    for base in (project_dir(), PROJECT_ROOT):
        pack = base / POLICY_DIR
        if (pack / "PulumiPolicy.yaml").is_file():
            return pack
    return None


Printer = Callable[[str, str], None]  # (stack, engine output line)


def select(
    stack: str, known: Mapping[str, int] | None = None, secrets_provider: str | None = None
) -> auto.Stack:
    """`stack` for one operation; created when the backend does not have it (`known`:
    the backend's stacks, read when not given), with `secrets_provider` (the group's
    Vault Transit key), else with the clone's passphrase salt."""
    known = deployed_stacks() if known is None else known
    if stack in known:
        return workspace.existing(project_dir(), stack)
    return workspace.create(project_dir(), stack, list(known), secrets_provider=secrets_provider)


def deployed_stacks() -> dict[str, int]:
    """Every stack of the project in the backend → its resource count (0: empty or
    destroyed). One CLI call; an empty dict when the backend has no stacks."""
    ws = workspace.workspace(project_dir())
    return {s.name: int(s.resource_count or 0) for s in ws.list_stacks()}


def _error_text(exc: Exception) -> str:
    text = getattr(exc, "stderr", "") or str(exc)
    lines = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    # The engine's own lines ("error: ...") say what went wrong; it repeats them
    # with resource prefixes, so keep each message once, from "error:" on.
    # A provider's exception reaches the engine as "Exception calling application: <it>";
    # the operator needs only <it>.
    lines = [ln.replace("Exception calling application: ", "") for ln in lines]
    errors = list(dict.fromkeys(ln[ln.index("error:") :].strip() for ln in lines if "error:" in ln))
    generic = (
        "error: update failed",
        "error: preview failed",
        "error: an unhandled error occurred",
    )
    specific = [e for e in errors if not e.startswith(generic)]
    picked = (specific or errors)[-6:] or lines[-6:]
    return "\n".join(picked)


def _clear_stale_locks(stack: str) -> list[str]:
    """Removes locks and torn checkpoint metadata left by engine processes that are
    gone (see dbfleet.ops.locks), so a killed run does not block every later one; says
    what it removed."""
    try:
        return locks.clear_stale_locks(stack) + locks.repair_torn_metadata(stack)
    except OSError as exc:
        return [f"{stack}: could not check its state locks: {exc}"]


def _summary(events: _Events, fallback: Mapping[str, int] | None) -> Mapping[str, int] | None:
    """The run's resource changes from its summary event (RolloutStack reads no
    history); `fallback` when the engine sent none."""
    got = events.collector.summary
    return got if got is not None else fallback


def _changes(summary: Mapping[str, int] | None) -> dict[str, int]:
    # "read"/"discard" are StackReferences being read or dropped, not changes.
    return {k: v for k, v in (summary or {}).items() if k not in ("same", "read", "discard") and v}


def _ordered_layers(layers: list[str] | None, action: str) -> list[str]:
    unknown = [layer for layer in layers or [] if layer not in LAYERS]
    if unknown:
        raise ValueError(f"unknown layer(s) {', '.join(unknown)}; layers are {', '.join(LAYERS)}")
    chosen = [layer for layer in LAYERS if layers is None or layer in layers]
    return list(reversed(chosen)) if action == "destroy" else chosen


class _Events:
    """Engine events of one stack → its ChangeCollector and the Progress display."""

    def __init__(self, stack: str, progress: Progress) -> None:
        self.stack = stack
        self.progress = progress
        self.collector = ChangeCollector()
        self._ops: dict[str, str] = {}

    def __call__(self, event: auto.events.EngineEvent) -> None:
        self.collector(event)
        try:
            self._progress(event)
        except Exception:  # noqa: BLE001, S110 — a display problem must never fail a rollout
            pass

    def _progress(self, event: auto.events.EngineEvent) -> None:
        if event.resource_pre_event is not None:
            meta = event.resource_pre_event.metadata
            op = meta.op.value
            if meta.type == STACK_TYPE or op in NO_CHANGE_OPS:
                return
            op = "replace" if op in REPLACE_OPS else op
            if meta.urn in self._ops:
                return
            self._ops[meta.urn] = op
            self.progress.resource(self.stack, op, urn_name(meta.urn), "start")
        elif event.res_outputs_event is not None:
            meta = event.res_outputs_event.metadata
            if meta.urn in self._ops:
                self.progress.resource(
                    self.stack, self._ops.pop(meta.urn), urn_name(meta.urn), "done"
                )
        elif event.res_op_failed_event is not None:
            meta = event.res_op_failed_event.metadata
            op = self._ops.pop(meta.urn, meta.op.value)
            self.progress.resource(self.stack, op, urn_name(meta.urn), "failed")


@dataclass
class RunOptions:
    policy_packs: list[str] = field(default_factory=list)
    printer: Printer | None = None  # raw engine output, for --verbose
    chain: bool = True  # preview downstream stacks against planned upstream outputs
    # group → secrets provider URL of its new stacks (dbfleet.ops.access); absent: the passphrase
    secrets_providers: dict[str, str] = field(default_factory=dict)


class _GroupRun:
    """One group's stacks, in order, in one thread."""

    def __init__(
        self,
        group: str,
        layers: list[str],
        action: str,
        known: dict[str, int],
        progress: Progress,
        options: RunOptions,
        repaired: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.group = group
        # what the run repaired in the backend before it started, per stack
        self.repaired = dict(repaired or {})
        self.layers = layers
        self.action = action
        self.known = known
        self.progress = progress
        self.options = options
        self.results: dict[str, StackResult] = {}
        self.plan: planned.PlannedWorkspace | None = None
        self.planned_outputs: dict[str, dict] = {}  # upstream stack → planned outputs that differ

    def name(self, layer: str) -> str:
        return f"{layer}-{self.group}"

    def deployed(self, stack: str) -> bool:
        return self.known.get(stack, 0) > 0

    def run(self) -> list[StackResult]:
        stop = False
        try:
            for layer in self.layers:
                stack = self.name(layer)
                if stop:
                    result = StackResult(
                        stack, Status.NOT_STARTED, note="an earlier stack of the group failed"
                    )
                else:
                    result = self._one(layer)
                    stop = result.status in ERROR_STATUSES
                self.results[stack] = result
                self.progress.stack_finished(result)
        finally:
            if self.plan is not None:
                self.plan.close()
        return [self.results[self.name(layer)] for layer in self.layers]

    # -- checks before a stack runs ----------------------------------------------
    def _blocked(self, layer: str) -> StackResult | None:
        stack = self.name(layer)
        in_run = set(self.layers)
        if self.action == "destroy":
            below = [
                self.name(d)
                for d in downstream(layer)
                if d not in in_run and self.deployed(self.name(d))
            ]
            if below:
                return StackResult(
                    stack,
                    Status.BLOCKED,
                    error=f"{', '.join(below)} still deployed and read{'s' if len(below) == 1 else ''} "
                    f"{stack}; destroy {'it' if len(below) == 1 else 'them'} first "
                    f"(dbfleet destroy {self.group}, without --layer, destroys the whole group in order)",
                )
            return None
        missing = [
            self.name(u)
            for u in UPSTREAM[layer]
            if u not in in_run and not self.deployed(self.name(u))
        ]
        if missing:
            verb = "preview" if self.action == "preview" else "deploy"
            return StackResult(
                stack,
                Status.BLOCKED,
                error=f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not deployed yet, and "
                f"{stack} reads {'its' if len(missing) == 1 else 'their'} outputs: cannot {verb} {stack}. "
                f"Deploy {'it' if len(missing) == 1 else 'them'} first: dbfleet up {self.group}"
                + ("" if len(missing) > 1 else f" --layer {parse_stack_name(missing[0]).layer}"),
            )
        return None

    # -- one stack -------------------------------------------------------------------
    def _one(self, layer: str) -> StackResult:
        stack = self.name(layer)
        blocked = self._blocked(layer)
        if blocked is not None:
            return blocked
        if self.action == "destroy" and not self.deployed(stack):
            # Never created, or destroyed already: nothing to do, and nothing to create.
            return StackResult(stack, Status.ABSENT, note="nothing deployed")
        cleared = self.repaired.pop(stack, []) + _clear_stale_locks(stack)
        self.progress.stack_started(stack)
        started, t0 = time.time(), time.monotonic()
        events = _Events(stack, self.progress)
        out = self._printer(stack)
        try:
            if self.action == "up":
                result = self._up(stack, events, out)
            elif self.action == "destroy":
                res = self._stack(stack).destroy(on_output=out, on_event=events, color="never")
                result = StackResult(
                    stack,
                    Status.DESTROYED,
                    changes=_changes(_summary(events, res.summary.resource_changes)),
                )
            elif self.action == "preview":
                result = self._preview(layer, events, out)
            else:
                raise ValueError(f"unknown action {self.action}")
        except Exception as exc:  # noqa: BLE001 — every failure becomes a reported result
            result = self._failure(layer, exc, events)
            if self.action == "preview" and self.plan is not None and self.plan.patched:
                ups = [u for u in (self.name(x) for x in UPSTREAM[layer]) if u in self.plan.patched]
                if ups:
                    result.note = (
                        f"previewed against the planned outputs of {', '.join(ups)}; values known only "
                        "after apply read as '(known after apply)'"
                    )
        if cleared:
            result.note = "\n".join([*cleared, *([result.note] if result.note else [])])
        result.resources = result.resources or events.collector.resources
        result.policy = result.policy or events.collector.policy
        result.started, result.finished = started, time.time()
        result.seconds = time.monotonic() - t0
        return result

    def _printer(self, stack: str) -> Callable[[str], None] | None:
        printer = self.options.printer
        if printer is None:
            return None
        return lambda line: printer(stack, line.rstrip("\n"))

    def _up(self, stack: str, events: _Events, out: Callable[[str], None] | None) -> StackResult:
        res = self._stack(stack).up(on_output=out, on_event=events, color="never")
        changes = _changes(_summary(events, res.summary.resource_changes))
        self.known[stack] = max(self.known.get(stack, 0), 1)
        exported = events.collector.planned_outputs
        return StackResult(
            stack,
            Status.APPLIED if changes else Status.UNCHANGED,
            changes=changes,
            outputs=(
                {k: mask(v) for k, v in exported.items()}
                if exported is not None
                else {k: ("[secret]" if v.secret else v.value) for k, v in res.outputs.items()}
            ),
        )

    def _stack(self, stack: str) -> auto.Stack:
        provider = self.options.secrets_providers.get(self.group)
        # only named when there is one: select's callers (and test doubles) without
        # providers keep the two-argument call
        st = select(stack, self.known, provider) if provider else select(stack, self.known)
        self.known.setdefault(stack, 0)
        return st

    def _preview(
        self, layer: str, events: _Events, out: Callable[[str], None] | None
    ) -> StackResult:
        stack = self.name(layer)
        # Upstream stacks of this run whose outputs will change are given to this
        # preview as planned; an upstream that is not deployed at all makes this
        # preview depend on something that does not exist yet.
        ups = [self.name(u) for u in UPSTREAM[layer]]
        waiting = [u for u in ups if u in self.results and self.results[u].status == Status.PENDING]
        if waiting:
            return StackResult(
                stack,
                Status.PENDING,
                note=f"can be previewed once {', '.join(waiting)} {'is' if len(waiting) == 1 else 'are'} applied",
            )
        changed_ups = [u for u in ups if u in self.planned_outputs]
        new_ups = [u for u in changed_ups if not self.deployed(u)]
        exists = stack in self.known
        note = ""
        if changed_ups or not exists:
            if not (self.options.chain and planned.available()):
                why = (
                    f"previewed after {', '.join(changed_ups)} {'is' if len(changed_ups) == 1 else 'are'} applied"
                    if changed_ups
                    else "created by `dbfleet up`"
                )
                return StackResult(
                    stack,
                    Status.PENDING,
                    note=f"{'new stack; ' if not exists else ''}{why} (the backend is not a local "
                    "file backend, so it cannot be previewed against planned outputs)",
                )
            if self.plan is None:
                self.plan = planned.PlannedWorkspace(project_dir())
            for u in changed_ups:
                if u not in self.plan.patched:
                    self.plan.set_outputs(u, self.planned_outputs[u])
            target = self.plan.select(stack)
            parts = []
            if not exists:
                parts.append("new stack")
            if changed_ups:
                parts.append(f"previewed against the planned outputs of {', '.join(changed_ups)}")
            note = "; ".join(parts)
        else:
            target = self._stack(stack)
        try:
            res = target.preview(
                on_output=out,
                on_event=events,
                color="never",
                diff=False,
                policy_packs=self.options.policy_packs or None,
            )
        except Exception:
            if new_ups:
                # The stack reads a stack that does not exist yet (a new group): what
                # it needs from it (secrets, directories) appears only once applied.
                # The engine's error is that absence, not a fault: it is not shown
                # as one (and its advice, a plain `pulumi up -s`, is not the way).
                return StackResult(
                    stack,
                    Status.PENDING,
                    note=f"{note}; can be previewed once {', '.join(new_ups)} "
                    f"{'is' if len(new_ups) == 1 else 'are'} applied (dbfleet up "
                    f"{self.group})",
                )
            raise
        collector = events.collector
        changes = _changes(res.change_summary)
        output_changes = collector.output_changes()
        if not exists:
            changes = changes or {"create": 1}
        plan_out = collector.planned_outputs
        if plan_out is not None and (
            not self.deployed(stack) or outputs_differ(collector.old_outputs, plan_out)
        ):
            self.planned_outputs[stack] = plan_out
        return StackResult(
            stack,
            Status.CHANGES if (changes or output_changes) else Status.NO_CHANGES,
            changes=changes,
            output_changes=output_changes,
            outputs={k: mask(v) for k, v in (plan_out or {}).items()},
            note=note,
        )

    def _failure(self, layer: str, exc: Exception, events: _Events) -> StackResult:
        stack = self.name(layer)
        text = _error_text(exc)
        if "currently locked" in text:
            return StackResult(stack, Status.FAILED, error=locks.locked_message(stack))
        # Engine diagnostics name the resource that failed; keep the last few.
        diag = [e for e in events.collector.errors if e not in text][-3:]
        if diag and ("update failed" in text or "preview failed" in text or not text):
            text = "\n".join([*diag, text]).strip()
        return StackResult(stack, Status.FAILED, error=text)


def run(
    groups: list[str],
    action: str,
    *,
    layers: list[str] | None = None,
    progress: Progress | None = None,
    options: RunOptions | None = None,
    printer: Printer | None = None,
) -> dict[str, list[StackResult]]:
    """Runs `action` (up | destroy | preview) over the groups; one list of results per
    group, in the order the group's stacks ran (or would have run)."""
    if action not in ("up", "destroy", "preview"):
        raise ValueError(f"unknown action {action}")
    chosen = _ordered_layers(layers, action)
    progress = progress or Progress()
    options = options or RunOptions()
    if printer is not None:
        options.printer = printer
    # A killed engine's torn checkpoint metadata breaks even the stack list below.
    repaired = locks.repair_every_stack()
    known = deployed_stacks()
    progress.start([f"{layer}-{g}" for g in groups for layer in chosen])
    lock = threading.Lock()
    safe = _LockedProgress(progress, lock)
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
            futures = {
                g: pool.submit(
                    _GroupRun(g, chosen, action, dict(known), safe, options, repaired).run
                )
                for g in groups
            }
            return {g: f.result() for g, f in futures.items()}
    finally:
        progress.close()


class _LockedProgress(Progress):
    """Serialises the display calls of the group threads."""

    def __init__(self, inner: Progress, lock: threading.Lock) -> None:
        self.inner, self.lock = inner, lock

    def stack_started(self, stack: str) -> None:
        with self.lock:
            self.inner.stack_started(stack)

    def resource(self, stack: str, op: str, name: str, phase: str) -> None:
        with self.lock:
            self.inner.resource(stack, op, name, phase)

    def stack_finished(self, result: StackResult) -> None:
        with self.lock:
            self.inner.stack_finished(result)


def flat(results: Mapping[str, list[StackResult]]) -> list[StackResult]:
    return [r for rs in results.values() for r in rs]


def describe(result: StackResult) -> str:
    """`create 2, update 4` (or `-`)."""
    return count_text(result.changes) or "-"


def outputs(stack: str) -> dict:
    """A deployed stack's outputs, secrets included (for the CLI's own use). Raises
    when the stack does not exist (and never creates it)."""
    got = stack_outputs(stack, show_secrets=True)
    if got is None:
        raise RuntimeError(f"stack {stack} does not exist")
    return got


def stack_outputs(stack: str, *, show_secrets: bool = False) -> dict | None:
    """A stack's outputs without creating or selecting it (one CLI call): None when
    the stack does not exist; secrets as "[secret]" unless `show_secrets`."""
    args = ["pulumi", "stack", "output", "--json", "--non-interactive", "--stack", stack]
    if show_secrets:
        args.append("--show-secrets")
    proc = subprocess.run(
        args, cwd=project_dir(), capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        if "no stack named" in proc.stderr or "not found" in proc.stderr:
            return None
        raise RuntimeError(f"pulumi stack output --stack {stack}: {proc.stderr.strip()}")
    return json.loads(proc.stdout or "{}")


def many_outputs(stacks: list[str]) -> dict[str, dict | None]:
    """`stack_outputs` of several stacks, read in parallel."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(stacks)))) as pool:
        return dict(zip(stacks, pool.map(stack_outputs, stacks), strict=True))
