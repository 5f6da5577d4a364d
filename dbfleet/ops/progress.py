"""Live progress of a rollout: which stack runs, which resource it is at, how long.

Three displays, all on a stream of their own (stderr by default, so that the final
table and `--json` documents on stdout stay clean for scripts):

- `Progress` — silent (`--quiet`, `--json`).
- `LineProgress` — one line per event, for logs and CI.
- `LiveProgress` — on a terminal: one line per stack, redrawn in place a few
  times a second with the elapsed time and the resource being worked on.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from dbfleet.ops.changes import SYMBOL, count_text
from dbfleet.ops.results import ERROR_STATUSES, StackResult, Status

ACTIVE = {"create": "creating", "update": "updating", "replace": "replacing", "delete": "deleting"}
DONE = {"create": "created", "update": "updated", "replace": "replaced", "delete": "deleted"}


class Progress:
    """The silent display; the base of the others."""

    def start(self, stacks: list[str]) -> None:
        pass

    def stack_started(self, stack: str) -> None:
        pass

    def resource(self, stack: str, op: str, name: str, phase: str) -> None:
        """`phase` is start | done | failed."""

    def stack_finished(self, result: StackResult) -> None:
        pass

    def close(self) -> None:
        pass


def _outcome(result: StackResult) -> str:
    text = result.status
    counts = count_text(result.changes)
    if counts:
        text += f": {counts}"
    if result.output_changes and not counts:
        text += ": outputs change"
    return text


class LineProgress(Progress):
    """`  12.3s replicas-eu  + ams-0-server creating` — one line per event."""

    def __init__(self, stream: TextIO | None = None, *, planning: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.planning = planning
        self._began: dict[tuple[str, str], float] = {}
        self.width = 12

    def _line(self, stack: str, text: str) -> None:
        elapsed = time.monotonic() - self.t0
        print(f"{elapsed:6.1f}s {stack:<{self.width}} {text}", file=self.stream, flush=True)

    def start(self, stacks: list[str]) -> None:
        self.width = max([12, *(len(s) for s in stacks)])

    def stack_started(self, stack: str) -> None:
        self._line(stack, "planning" if self.planning else "started")

    def resource(self, stack: str, op: str, name: str, phase: str) -> None:
        sym = SYMBOL.get(op, op)
        key = (stack, name)
        if self.planning:
            if phase == "start":
                self._line(stack, f"{sym} {name} ({op})")
            return
        if phase == "start":
            self._began[key] = time.monotonic()
            self._line(stack, f"{sym} {name} {ACTIVE.get(op, op)}")
        else:
            took = time.monotonic() - self._began.pop(key, time.monotonic())
            word = DONE.get(op, op) if phase == "done" else f"{op} FAILED"
            self._line(stack, f"{sym} {name} {word} ({took:.1f}s)")

    def stack_finished(self, result: StackResult) -> None:
        if result.status == Status.NOT_STARTED:
            self._line(result.stack, "not started")
            return
        self._line(result.stack, f"{_outcome(result)} ({result.seconds:.1f}s)")


class LiveProgress(Progress):
    """One line per stack, redrawn in place on a terminal."""

    SPINNER = "|/-\\"

    def __init__(
        self, stream: TextIO | None = None, *, planning: bool = False, interval: float = 0.2
    ) -> None:
        self.stream = stream or sys.stderr
        self.planning = planning
        self.interval = interval
        self.stacks: list[str] = []
        self.lines: dict[str, str] = {}
        self.began: dict[str, float] = {}
        self.current: dict[str, tuple[str, str, float]] = {}  # stack → (op, name, since)
        self.done: dict[str, str] = {}
        self._drawn = 0
        self._tick = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, stacks: list[str]) -> None:
        self.stacks = list(stacks)
        self.width = max([12, *(len(s) for s in stacks)])
        self._thread = threading.Thread(target=self._loop, name="dbfleet-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.draw()

    def stack_started(self, stack: str) -> None:
        with self._lock:
            self.began[stack] = time.monotonic()

    def resource(self, stack: str, op: str, name: str, phase: str) -> None:
        with self._lock:
            if phase == "start":
                self.current[stack] = (op, name, time.monotonic())
            elif self.current.get(stack, ("", "", 0))[1] == name:
                self.current.pop(stack, None)

    def stack_finished(self, result: StackResult) -> None:
        with self._lock:
            self.current.pop(result.stack, None)
            self.done[result.stack] = f"{_outcome(result)} ({result.seconds:.1f}s)"

    def _render(self, stack: str) -> str:
        now = time.monotonic()
        if stack in self.done:
            mark = "x" if self.done[stack].startswith(tuple(ERROR_STATUSES)) else "*"
            return f"{mark} {stack:<{self.width}} {self.done[stack]}"
        if stack not in self.began:
            return f"  {stack:<{self.width}} waiting"
        spin = self.SPINNER[self._tick % len(self.SPINNER)]
        text = f"{spin} {stack:<{self.width}} {now - self.began[stack]:5.1f}s"
        if stack in self.current:
            op, name, since = self.current[stack]
            verb = op if self.planning else ACTIVE.get(op, op)
            text += f"  {SYMBOL.get(op, op)} {name} {verb} ({now - since:.1f}s)"
        return text

    def draw(self, final: bool = False) -> None:
        with self._lock:
            self._tick += 1
            lines = [self._render(s) for s in self.stacks]
            out = []
            if self._drawn:
                out.append(f"\x1b[{self._drawn}F")  # back to the first line of the block
            out += [f"\x1b[2K{line}\n" for line in lines]
            self._drawn = len(lines)
            try:
                self.stream.write("".join(out))
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.draw(final=True)


def choose(*, quiet: bool, stream: TextIO | None = None, planning: bool = False) -> Progress:
    """The display for this terminal: silent when quiet, live on a TTY, else lines."""
    stream = stream or sys.stderr
    if quiet:
        return Progress()
    if getattr(stream, "isatty", lambda: False)():
        return LiveProgress(stream, planning=planning)
    return LineProgress(stream, planning=planning)
