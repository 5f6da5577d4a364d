"""dbfleet.ops.progress: what an operator sees while stacks run."""

from __future__ import annotations

import io
import re

from dbfleet.ops import progress
from dbfleet.ops.results import StackResult


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_choose_by_terminal_and_quiet() -> None:
    assert type(progress.choose(quiet=True, stream=Tty())) is progress.Progress
    assert isinstance(progress.choose(quiet=False, stream=Tty()), progress.LiveProgress)
    assert isinstance(progress.choose(quiet=False, stream=io.StringIO()), progress.LineProgress)


def test_line_progress_names_stack_resource_and_elapsed() -> None:
    out = io.StringIO()
    p = progress.LineProgress(out)
    p.start(["replicas-eu", "proxies-eu"])
    p.stack_started("replicas-eu")
    p.resource("replicas-eu", "create", "ams-0-server", "start")
    p.resource("replicas-eu", "create", "ams-0-server", "done")
    p.resource("replicas-eu", "update", "fra-0-server", "start")
    p.resource("replicas-eu", "update", "fra-0-server", "failed")
    p.stack_finished(StackResult("replicas-eu", "failed", 3.25, {"create": 1}))
    p.stack_finished(StackResult("proxies-eu", "not started"))
    lines = out.getvalue().splitlines()
    assert all(re.match(r"^\s*\d+\.\ds (replicas|proxies)-eu ", ln) for ln in lines), lines
    body = [ln.split(maxsplit=2)[2] for ln in lines]
    assert body == [
        "started",
        "+ ams-0-server creating",
        "+ ams-0-server created (0.0s)",
        "~ fra-0-server updating",
        "~ fra-0-server update FAILED (0.0s)",
        "failed: create 1 (3.2s)",
        "not started",
    ]


def test_line_progress_while_planning_lists_planned_steps() -> None:
    out = io.StringIO()
    p = progress.LineProgress(out, planning=True)
    p.start(["networks-eu"])
    p.stack_started("networks-eu")
    p.resource("networks-eu", "replace", "x", "start")
    p.resource("networks-eu", "replace", "x", "done")
    r = StackResult("networks-eu", "changes")
    r.output_changes = [object()]  # type: ignore[list-item]
    p.stack_finished(r)
    body = [ln.split(maxsplit=2)[2] for ln in out.getvalue().splitlines()]
    assert body == ["planning", "+- x (replace)", "changes: outputs change (0.0s)"]


def test_live_progress_redraws_one_line_per_stack() -> None:
    out = Tty()
    p = progress.LiveProgress(out, interval=3600)  # no ticks during the test: draw by hand
    p.start(["accounts-eu", "networks-eu"])
    p.stack_started("accounts-eu")
    p.resource("accounts-eu", "create", "account-account", "start")
    p.draw()
    first = out.getvalue()
    assert "accounts-eu" in first and "+ account-account creating" in first
    assert "networks-eu" in first and "waiting" in first
    p.stack_finished(StackResult("accounts-eu", "applied", 2.0, {"create": 3}))
    p.close()
    last = out.getvalue()[len(first) :]
    assert last.startswith("\x1b[2F")  # back over the two lines drawn before
    assert "* accounts-eu" in last and "applied: create 3 (2.0s)" in last
