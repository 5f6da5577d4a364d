"""Stale state locks of the file backend.

The engine locks a stack while it works on it (`.pulumi/locks/.../<stack>/*.json`
in the state directory, recording the pid and host of the `pulumi` process). When
that process is killed, its lock stays and every later run of the stack stops at
"the stack is currently locked". A lock whose process is gone from this very
host cannot protect anything, so a rollout removes it — and says so. A lock held
by a live process (another operator's run) is left alone: the engine refuses the
second run with its own clear message.

A killed engine can also leave a stack's checkpoint unreadable: the file backend
replaces `<stack>.json` atomically, but rewrites its metadata sidecar
`<stack>.json.attrs` in place, so a kill in the middle leaves it empty and every
later load of the stack fails with "failed to load checkpoint: EOF". The sidecar
holds only the blob's content type and checksum, and the backend reads a missing
one as the default, so a torn one is removed — only once no live engine holds the
stack.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from dbfleet.ops.backend import file_backend_dir


@dataclass(frozen=True)
class Lock:
    path: Path
    pid: int
    hostname: str
    username: str
    timestamp: str


def locks_of(stack: str, state: Path) -> list[Lock]:
    found = []
    for path in sorted((state / ".pulumi" / "locks").glob(f"**/{stack}/*.json")):
        try:
            data = json.loads(path.read_text())
            found.append(
                Lock(
                    path,
                    int(data["pid"]),
                    data.get("hostname", ""),
                    data.get("username", ""),
                    data.get("timestamp", ""),
                )
            )
        except (OSError, ValueError, KeyError):
            continue  # a lock being written right now, or not one of the engine's
    return found


def _alive_engine(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # A reused pid that is not a pulumi process does not hold the lock.
    return b"pulumi" in cmdline


def is_stale(lock: Lock, hostname: str | None = None) -> bool:
    return lock.hostname == (hostname or socket.gethostname()) and not _alive_engine(lock.pid)


def live_holders(stack: str, backend_url: str | None = None) -> list[str]:
    """Who holds `stack`'s lock and is still running (or cannot be checked: another
    host's), one phrase each: `pid 4242 on host db-admin, since 2026-12-01T10:00:00Z,
    still running`."""
    state = file_backend_dir(backend_url)
    if state is None:
        return []
    here = socket.gethostname()
    found = []
    for lock in locks_of(stack, state):
        if is_stale(lock, here):
            continue
        alive = "still running" if lock.hostname == here else "on another host, not checked"
        who = f" by {lock.username}" if lock.username else ""
        found.append(
            f"pid {lock.pid}{who} on host {lock.hostname or '?'}, since {lock.timestamp or '?'}, {alive}"
        )
    return found


def locked_message(stack: str, backend_url: str | None = None) -> str:
    """What to tell an operator whose run found `stack` locked: who holds it, and
    what (not) to do. The engine's own advice, `pulumi cancel`, deletes the lock
    even while its run is alive."""
    holders = live_holders(stack, backend_url)
    held = "; ".join(holders) if holders else "a run whose lock is still there"
    return (
        f"{stack} is locked by another run: {held}. Wait for it to finish and run again; "
        "do not `pulumi cancel` a run that is still going (it deletes its lock, not the run)"
    )


def clear_stale_locks(stack: str, backend_url: str | None = None) -> list[str]:
    """Removes this host's locks of `stack` whose engine process is gone; returns what it did."""
    state = file_backend_dir(backend_url)
    if state is None:
        return []
    removed = []
    for lock in locks_of(stack, state):
        if is_stale(lock):
            lock.path.unlink(missing_ok=True)
            removed.append(
                f"{stack}: removed a stale lock of pid {lock.pid} (started {lock.timestamp}, no longer running)"
            )
    return removed


def repair_every_stack(backend_url: str | None = None) -> dict[str, list[str]]:
    """`repair_torn_metadata` for every stack that has a checkpoint in the backend.

    Run before anything lists the stacks: one torn sidecar makes even `pulumi stack
    ls` fail ("error: EOF"), so the per-stack repair of a rollout would come too late.
    Returns stack -> what was done (only stacks where something was)."""
    state = file_backend_dir(backend_url)
    if state is None:
        return {}
    names = {
        p.name.split(".json", 1)[0] for p in (state / ".pulumi" / "stacks").glob("**/*.json*.attrs")
    }
    done = {}
    for name in sorted(names):
        try:
            fixed = repair_torn_metadata(name, backend_url)
        except OSError as exc:
            fixed = [f"{name}: could not check its checkpoint metadata: {exc}"]
        if fixed:
            done[name] = fixed
    return done


def repair_torn_metadata(stack: str, backend_url: str | None = None) -> list[str]:
    """Removes `stack`'s checkpoint metadata sidecars that a killed engine left torn
    (empty or not JSON), when no live engine holds the stack; returns what it did."""
    state = file_backend_dir(backend_url)
    if state is None:
        return []
    if any(not is_stale(lock) for lock in locks_of(stack, state)):
        return []  # an engine is working on the stack: its sidecar may be mid-write
    repaired = []
    stacks = state / ".pulumi" / "stacks"
    for name in (f"{stack}.json.attrs", f"{stack}.json.gz.attrs"):
        for path in sorted(stacks.glob(f"**/{name}")):
            try:
                whole = isinstance(json.loads(path.read_text()), dict)
            except ValueError:  # empty, cut short, or not text
                whole = False
            if not whole:
                path.unlink(missing_ok=True)
                repaired.append(
                    f"{stack}: removed the torn checkpoint metadata {path.name} left by a killed engine"
                )
    return repaired
