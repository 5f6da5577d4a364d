"""The project's stacks on the Automation API, with only the CLI calls dbfleet needs.

`auto.create_or_select_stack` costs a `pulumi version` (new workspace) and a
`pulumi stack select` before every operation, and `Stack.up()`/`destroy()` read
their result back with `pulumi stack output` twice and `pulumi stack history`:
five extra CLI processes per stack, each loading the stack (measured in
BENCHMARKS.md, figure 2). Here one workspace serves a whole process, a stack known
to exist is used without selecting it (every command names its stack with
`--stack`), and `up`/`destroy` leave their results to the engine events of the
same run, which `dbfleet.ops.changes.ChangeCollector` already records.

A stack's config file (`stacks/Pulumi.<stack>.yaml`) holds only that salt, which
belongs to the clone's passphrase: it is per clone, not tracked in git. A stack that
exists in the backend but whose file has no salt (a clone that lost its files when
they were untracked, say) gets back the salt its state was last encrypted with,
before the engine would make up a new one.

New stacks share the clone's passphrase salt: a StackReference to a stack with
another salt makes the engine derive that stack's key again (PBKDF2, 1,000,000
rounds, ≈ 0.2–0.45 s each); with one salt it derives it once per process. The key
still comes from the clone's one passphrase, which protects every stack already.
"""

from __future__ import annotations

import datetime
import threading
from collections import Counter
from pathlib import Path

from pulumi import automation as auto
from pulumi.automation._stack import StackInitMode

from dbfleet.model.stackname import StackNameError, parse_stack_name
from dbfleet.ops.backend import stack_config_file

SALT_KEY = "encryptionsalt"

_lock = threading.Lock()
_workspaces: dict[str, auto.LocalWorkspace] = {}


def workspace(project: Path) -> auto.LocalWorkspace:
    """One LocalWorkspace per project directory and process (its constructor runs
    `pulumi version`; nothing else in it is per stack)."""
    key = str(project)
    with _lock:
        ws = _workspaces.get(key)
        if ws is None:
            ws = _workspaces[key] = auto.LocalWorkspace(work_dir=key)
        return ws


def forget_workspaces() -> None:
    """Drops the cached workspaces (for tests that change PATH or the project)."""
    with _lock:
        _workspaces.clear()


class RolloutStack(auto.Stack):
    """An existing stack of the project, as one rollout step uses it.

    Not selected on creation, and after `up`/`destroy` not read back: `outputs()`
    is empty and `info()` a bare summary — callers take changes and outputs from
    the run's engine events (`rollout.stack_outputs` reads outputs when needed)."""

    def __init__(self, name: str, ws: auto.LocalWorkspace) -> None:
        # Deliberately not auto.Stack.__init__: that runs `pulumi stack select`.
        self.name = name
        self.workspace = ws
        self._mode = StackInitMode.SELECT

    def outputs(self) -> auto.OutputMap:
        return {}

    def info(self, show_secrets: bool = True) -> auto.UpdateSummary:
        now = datetime.datetime.now(datetime.UTC)
        return auto.UpdateSummary(
            kind="", start_time=now, message="", environment={}, config={}, result=""
        )


def _salt_of(path: Path) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{SALT_KEY}:"):
            value = line.split(":", 1)[1].strip()
            return value or None
    return None


def _group_of(stack: str) -> str | None:
    try:
        return parse_stack_name(stack).group
    except StackNameError:
        return None  # a stack of another shape (made by hand) belongs to no group


def clone_salt(project: Path, stack: str, existing: list[str]) -> str | None:
    """The passphrase salt the stacks of this clone already use (None for the first
    stack): the one most used by `stack`'s own group (the stacks it can read),
    else by any stack. Only config files of stacks that exist in the backend count,
    so a salt is one this backend's passphrase has opened before."""
    group = _group_of(stack)
    mine = [s for s in existing if s != stack and group and _group_of(s) == group]
    others = [s for s in existing if s != stack and s not in mine]
    for stacks in (mine, others):
        salts = Counter(
            s for s in (_salt_of(stack_config_file(project, st)) for st in stacks) if s is not None
        )
        if salts:
            return salts.most_common(1)[0][0]
    return None


def create(project: Path, stack: str, existing: list[str]) -> RolloutStack:
    """Creates `stack` (`pulumi stack init`) with the clone's salt when there is one.

    The salt is written into the stack's config file first; `stack init` checks it
    against the passphrase. If that check fails (a salt made with another
    passphrase), the file is put back as it was and the stack gets its own salt."""
    ws = workspace(project)
    path = stack_config_file(project, stack)
    salt = clone_salt(project, stack, existing)
    before = path.read_text() if path.exists() else None
    if salt is not None and (before is None or _salt_of(path) is None):
        text = before or ""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            text + ("" if not text or text.endswith("\n") else "\n") + f"{SALT_KEY}: {salt}\n"
        )
        try:
            ws.create_stack(stack)
        except auto.CommandError as exc:
            if "passphrase" not in str(exc).lower():
                _restore(path, before)
                raise
            _restore(path, before)
            ws.create_stack(stack)
    else:
        ws.create_stack(stack)
    return RolloutStack(stack, ws)


def _restore(path: Path, before: str | None) -> None:
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(before)


def existing(project: Path, stack: str) -> RolloutStack:
    restore_salt(project, stack)
    return RolloutStack(stack, workspace(project))


def restore_salt(project: Path, stack: str) -> str | None:
    """Writes the salt of `stack`'s state into its config file when that file has
    none; returns the salt written (None: nothing to do, or the state has none)."""
    path = stack_config_file(project, stack)
    if _salt_of(path) is not None:
        return None
    salt = _state_salt(project, stack)
    if salt is None:
        return None
    text = path.read_text() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        text + ("" if not text or text.endswith("\n") else "\n") + f"{SALT_KEY}: {salt}\n"
    )
    return salt


def _state_salt(project: Path, stack: str) -> str | None:
    """The passphrase salt `stack`'s checkpoint was encrypted with (file backend only)."""
    from dbfleet.ops.identity import stack_checkpoint

    try:
        data = stack_checkpoint(stack, project)
    except (OSError, ValueError):
        return None
    latest = ((data or {}).get("checkpoint") or {}).get("latest") or {}
    provider = latest.get("secrets_providers") or {}
    if provider.get("type") != "passphrase":
        return None
    salt = (provider.get("state") or {}).get("salt")
    return salt if isinstance(salt, str) and salt else None
