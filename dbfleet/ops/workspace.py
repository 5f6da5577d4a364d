"""The project's stacks on the Automation API, with only the CLI calls dbfleet needs.

`auto.create_or_select_stack` costs a `pulumi version` (new workspace) and a
`pulumi stack select` before every operation, and `Stack.up()`/`destroy()` read
their result back with `pulumi stack output` twice and `pulumi stack history`:
five extra CLI processes per stack, each loading the stack (measured in
BENCHMARKS.md, figure 2). Here one workspace serves a whole process, a stack known
to exist is used without selecting it (every command names its stack with
`--stack`), and `up`/`destroy` leave their results to the engine events of the
same run, which `dbfleet.ops.changes.ChangeCollector` already records.

A stack's config file (`stacks/Pulumi.<stack>.yaml`) holds only how its secrets are
encrypted: the passphrase salt, or (issue 14) the Vault Transit secrets provider URL
(`hashivault://<key>`, one key per group, see dbfleet.ops.access) and the data key that
key encrypted. It is per clone, not tracked in git. A stack that exists in the backend
but whose file lacks them (a clone that lost its files when they were untracked, say)
gets back what its state was last encrypted with, before the engine would make up a new
passphrase salt — which, for a Transit stack, would silently move it to the passphrase.

New stacks are created with the group's Transit key when the caller names one
(`secrets_provider`); the passphrase and its salt are the fallback without a Vault.

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
PROVIDER_KEY = "secretsprovider"
ENCRYPTED_KEY = "encryptedkey"

_lock = threading.Lock()
_workspaces: dict[str, auto.LocalWorkspace] = {}
_provider_workspaces: dict[tuple[str, str], auto.LocalWorkspace] = {}


def workspace(project: Path) -> auto.LocalWorkspace:
    """One LocalWorkspace per project directory and process (its constructor runs
    `pulumi version`; nothing else in it is per stack)."""
    key = str(project)
    with _lock:
        ws = _workspaces.get(key)
        if ws is None:
            ws = _workspaces[key] = auto.LocalWorkspace(work_dir=key)
        return ws


def provider_workspace(project: Path, secrets_provider: str) -> auto.LocalWorkspace:
    """A workspace whose `stack init` passes `--secrets-provider` (one per provider:
    the Automation API takes it per workspace, not per stack)."""
    key = (str(project), secrets_provider)
    with _lock:
        ws = _provider_workspaces.get(key)
        if ws is None:
            ws = _provider_workspaces[key] = auto.LocalWorkspace(
                work_dir=str(project), secrets_provider=secrets_provider
            )
        return ws


def forget_workspaces() -> None:
    """Drops the cached workspaces (for tests that change PATH or the project)."""
    with _lock:
        _workspaces.clear()
        _provider_workspaces.clear()


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


def create(
    project: Path, stack: str, existing: list[str], secrets_provider: str | None = None
) -> RolloutStack:
    """Creates `stack` (`pulumi stack init`): with `secrets_provider` when given (the
    group's Vault Transit key), else with the clone's salt when there is one.

    The salt is written into the stack's config file first; `stack init` checks it
    against the passphrase. If that check fails (a salt made with another
    passphrase), the file is put back as it was and the stack gets its own salt."""
    ws = workspace(project)
    if secrets_provider:
        provider_workspace(project, secrets_provider).create_stack(stack)
        return RolloutStack(stack, ws)
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
    if restore_salt(project, stack) is None:
        restore_provider(project, stack)
    return RolloutStack(stack, workspace(project))


def _config_has(path: Path, key: str) -> bool:
    try:
        text = path.read_text()
    except OSError:
        return False
    return any(
        line.startswith(f"{key}:") and line.split(":", 1)[1].strip() for line in text.splitlines()
    )


def restore_provider(project: Path, stack: str) -> str | None:
    """Writes the cloud secrets provider (URL and encrypted data key) of `stack`'s state
    into its config file when that file names no provider and no salt; returns the URL
    written (None: nothing to do, or the state is not a cloud provider's)."""
    path = stack_config_file(project, stack)
    if _config_has(path, PROVIDER_KEY) or _salt_of(path) is not None:
        return None
    provider = _state_provider(project, stack)
    if provider is None or provider.get("type") != "cloud":
        return None
    state = provider.get("state") or {}
    url, key = state.get("url"), state.get(ENCRYPTED_KEY)
    if not (isinstance(url, str) and url and isinstance(key, str) and key):
        return None
    text = path.read_text() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    # the data key is ciphertext of the Transit key: useless without Vault, safe in the file
    path.write_text(
        text
        + ("" if not text or text.endswith("\n") else "\n")
        + f"{PROVIDER_KEY}: {url}\n{ENCRYPTED_KEY}: {key}\n"
    )
    return url


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


def _state_provider(project: Path, stack: str) -> dict | None:
    """The secrets provider `stack`'s checkpoint was encrypted with (file backend only)."""
    from dbfleet.ops.identity import stack_checkpoint

    try:
        data = stack_checkpoint(stack, project)
    except (OSError, ValueError):
        return None
    latest = ((data or {}).get("checkpoint") or {}).get("latest") or {}
    provider = latest.get("secrets_providers")
    return provider if isinstance(provider, dict) else None


def _state_salt(project: Path, stack: str) -> str | None:
    """The passphrase salt `stack`'s checkpoint was encrypted with (file backend only)."""
    provider = _state_provider(project, stack) or {}
    if provider.get("type") != "passphrase":
        return None
    salt = (provider.get("state") or {}).get("salt")
    return salt if isinstance(salt, str) and salt else None
