"""dbfleet.ops.rollout without the engine: order, parallel groups, stops, blocks, chained previews."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from pulumi.automation import events

from dbfleet.ops import planned, results, rollout
from dbfleet.ops.changes import SECRET_SIG, SIG_KEY, UNKNOWN_SENTINEL
from dbfleet.ops.progress import Progress
from tests.unit.engine_events import env, pre, stack_outputs, urn

LAYERS = ["accounts", "networks", "replicas", "proxies"]


class EngineError(Exception):
    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


@dataclass
class Engine:
    """A fake backend: which stacks exist, what each operation does, and a call log."""

    known: dict[str, int] = field(default_factory=dict)
    fail: dict[str, str] = field(default_factory=dict)  # stack -> error text
    plans: dict[str, list] = field(default_factory=dict)  # stack -> events its preview emits
    up_events: dict[str, list] = field(default_factory=dict)  # stack -> events its up emits
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (where, action, stack)
    barrier: threading.Barrier | None = None
    stale: dict[str, list[str]] = field(
        default_factory=dict
    )  # stack -> what clearing its locks said
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stack(self, name: str, where: str = "real") -> FakeStack:
        return FakeStack(self, name, where)


@dataclass
class FakeStack:
    engine: Engine
    name: str
    where: str

    def _run(self, action: str, on_event) -> None:
        with self.engine.lock:
            self.engine.calls.append((self.where, action, self.name))
        if self.engine.barrier is not None and self.name.startswith("accounts-"):
            self.engine.barrier.wait(timeout=5)  # both groups must be in here at once
        for ev in self.engine.plans.get(self.name, []) if action == "preview" else []:
            on_event(ev)
        if self.name in self.engine.fail:
            raise EngineError(f"error: {self.engine.fail[self.name]}\nerror: update failed")

    def up(self, on_output=None, on_event=None, color=None):
        self._run("up", on_event)
        for ev in self.engine.up_events.get(self.name, []):
            on_event(ev)
        return SimpleNamespace(
            summary=SimpleNamespace(resource_changes={"create": 2, "same": 1}), outputs={}
        )

    def destroy(self, on_output=None, on_event=None, color=None):
        self._run("destroy", on_event)
        return SimpleNamespace(summary=SimpleNamespace(resource_changes={"delete": 2}))

    def preview(self, on_output=None, on_event=None, color=None, diff=None, policy_packs=None):
        self._run("preview", on_event)
        counts: dict[str, int] = {}
        for ev in self.engine.plans.get(self.name, []):
            if (
                ev.resource_pre_event is not None
                and ev.resource_pre_event.metadata.op.value not in ("same", "read")
            ):
                op = ev.resource_pre_event.metadata.op.value
                counts[op] = counts.get(op, 0) + 1
        return SimpleNamespace(change_summary={"same": 1, **counts})


class FakePlan:
    instances: ClassVar[list[FakePlan]] = []

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.patched: dict[str, dict] = {}
        self.closed = False
        FakePlan.instances.append(self)

    def set_outputs(self, stack: str, outputs: dict) -> None:
        self.patched[stack] = outputs

    def select(self, stack: str) -> FakeStack:
        return self.engine.stack(stack, "scratch")

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Engine:
    eng = Engine()
    monkeypatch.setattr(rollout, "deployed_stacks", lambda: dict(eng.known))
    monkeypatch.setattr(rollout, "select", lambda name, known=None: eng.stack(name))
    monkeypatch.setattr(planned, "available", lambda: True)
    monkeypatch.setattr(rollout, "_clear_stale_locks", lambda stack: eng.stale.pop(stack, []))
    FakePlan.instances = []
    monkeypatch.setattr(planned, "PlannedWorkspace", lambda project: FakePlan(eng))
    return eng


def deployed(*groups: str, count: int = 3) -> dict[str, int]:
    return {f"{layer}-{g}": count for g in groups for layer in LAYERS}


def statuses(results: dict[str, list[results.StackResult]]) -> dict[str, str]:
    return {r.stack: r.status for rs in results.values() for r in rs}


class Recorder(Progress):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, stacks: list[str]) -> None:
        self.events.append(("start", tuple(stacks)))

    def stack_started(self, stack: str) -> None:
        self.events.append(("started", stack))

    def resource(self, stack: str, op: str, name: str, phase: str) -> None:
        self.events.append(("resource", stack, op, name, phase))

    def stack_finished(self, result: results.StackResult) -> None:
        self.events.append(("finished", result.stack, result.status))

    def close(self) -> None:
        self.events.append(("close",))


# -- up -------------------------------------------------------------------------------------------
def test_up_runs_layers_in_order_and_groups_in_parallel(engine: Engine) -> None:
    engine.barrier = threading.Barrier(2)
    results = rollout.run(["us", "eu"], "up")
    assert statuses(results) == {
        f"{layer}-{g}": "applied" for g in ("us", "eu") for layer in LAYERS
    }
    for g in ("us", "eu"):
        assert [s for _, a, s in engine.calls if s.endswith(f"-{g}")] == [
            f"{layer}-{g}" for layer in LAYERS
        ]
        assert [r.stack for r in results[g]] == [f"{layer}-{g}" for layer in LAYERS]
        starts = [r.started for r in results[g]]
        assert starts == sorted(starts)
    assert results["us"][0].changes == {"create": 2}


def test_up_takes_changes_and_outputs_from_the_engine_events(engine: Engine) -> None:
    # RolloutStack reads nothing back after `up` (no `stack output`/`stack history`):
    # the summary event and the stack's outputs event of the same run are the result.
    engine.known = deployed("us")
    engine.up_events["networks-us"] = [
        events.EngineEvent.from_json(
            {
                "summaryEvent": {
                    "resourceChanges": {"update": 1, "same": 3},
                    "maybeCorrupt": False,
                    "durationSeconds": 1,
                    "policyPacks": {},
                }
            }
        ),
        stack_outputs(
            "networks-us", {"port": 1}, {"port": 2, "token": {SIG_KEY: SECRET_SIG, "value": "x"}}
        ),
    ]
    results = rollout.run(["us"], "up")
    net = next(r for r in results["us"] if r.stack == "networks-us")
    assert net.status == "applied" and net.changes == {"update": 1}
    assert net.outputs == {"port": 2, "token": "[secret]"}
    # Without events the fake's own summary is the fallback.
    acc = next(r for r in results["us"] if r.stack == "accounts-us")
    assert acc.changes == {"create": 2}


def test_a_failure_stops_its_group_only(engine: Engine) -> None:
    engine.fail["replicas-us"] = (
        "pg_primary.sh create failed (exit 1): could not bind 127.0.0.1:5432"
    )
    results = rollout.run(["us", "eu"], "up")
    st = statuses(results)
    assert (st["accounts-us"], st["networks-us"], st["replicas-us"], st["proxies-us"]) == (
        "applied",
        "applied",
        "failed",
        "not started",
    )
    assert all(st[f"{layer}-eu"] == "applied" for layer in LAYERS)
    assert ("real", "up", "proxies-us") not in engine.calls
    failed = results["us"][2]
    assert "could not bind" in failed.error and "update failed" not in failed.error


def test_a_stale_lock_removed_before_a_stack_runs_is_reported(engine: Engine) -> None:
    engine.stale["replicas-eu"] = [
        "replicas-eu: removed a stale lock of pid 4242 (no longer running)"
    ]
    results = rollout.run(["eu"], "up")
    assert (
        results["eu"][2].note == "replicas-eu: removed a stale lock of pid 4242 (no longer running)"
    )
    assert results["eu"][2].status == "applied"


def test_up_of_one_layer_is_blocked_when_its_upstream_is_not_deployed(engine: Engine) -> None:
    engine.known = {"accounts-eu": 3}
    results = rollout.run(["eu"], "up", layers=["replicas"])
    (r,) = results["eu"]
    assert r.status == "blocked"
    assert (
        "networks-eu is not deployed yet" in r.error and "dbfleet up eu --layer networks" in r.error
    )
    assert engine.calls == []


def test_progress_sees_every_stack(engine: Engine) -> None:
    rec = Recorder()
    rollout.run(["eu"], "up", layers=["accounts", "networks"], progress=rec)
    assert rec.events[0] == ("start", ("accounts-eu", "networks-eu"))
    assert ("finished", "networks-eu", "applied") in rec.events
    assert rec.events[-1] == ("close",)


# -- destroy --------------------------------------------------------------------------------------
def test_destroy_runs_in_reverse_and_skips_absent_stacks(engine: Engine) -> None:
    engine.known = {**deployed("eu"), "replicas-eu": 0}  # destroyed earlier: the stack is empty
    engine.known.pop("accounts-eu")  # never created
    results = rollout.run(["eu"], "destroy")
    assert [r.stack for r in results["eu"]] == [f"{layer}-eu" for layer in reversed(LAYERS)]
    st = statuses(results)
    assert (st["replicas-eu"], st["accounts-eu"]) == ("absent", "absent")
    assert [s for _, a, s in engine.calls] == ["proxies-eu", "networks-eu"]


def test_destroying_a_layer_under_a_deployed_one_is_refused(engine: Engine) -> None:
    engine.known = deployed("eu")
    results = rollout.run(["eu"], "destroy", layers=["networks"])
    (r,) = results["eu"]
    assert r.status == "blocked"
    assert "replicas-eu, proxies-eu still deployed" in r.error
    assert engine.calls == []


# -- preview --------------------------------------------------------------------------------------
def _networks_plan(stack: str = "networks-eu") -> list:
    old = {"regions": {"fra": {"host": "127.77.12.1"}}}
    new = {"regions": {"fra": {"host": "127.77.12.1"}, "ams": {"host": "127.77.1.1"}}}
    return [stack_outputs(stack, old, new)]


def test_preview_of_unchanged_stacks_uses_the_real_backend(engine: Engine) -> None:
    engine.known = deployed("eu")
    results = rollout.run(["eu"], "preview")
    assert set(statuses(results).values()) == {"no changes"}
    assert {w for w, _, _ in engine.calls} == {"real"}
    assert FakePlan.instances == []


def test_downstream_is_previewed_against_planned_upstream_outputs(engine: Engine) -> None:
    engine.known = deployed("eu")
    engine.plans["networks-eu"] = _networks_plan()
    s = "replicas-eu"
    engine.plans[s] = [
        pre("create", urn(s, "ams-0-server"), new=env(PG_HOST="127.77.1.1")),
        stack_outputs(
            s,
            {"nodes": {"fra": {"port": 5432}}},
            {"nodes": {"fra": {"port": UNKNOWN_SENTINEL}, "ams": {"port": UNKNOWN_SENTINEL}}},
        ),
    ]
    results = rollout.run(["eu"], "preview")
    st = statuses(results)
    assert st == {
        "accounts-eu": "no changes",
        "networks-eu": "changes",
        "replicas-eu": "changes",
        "proxies-eu": "no changes",
    }
    where = {s: w for w, _, s in engine.calls}
    assert where == {
        "accounts-eu": "real",
        "networks-eu": "real",
        "replicas-eu": "scratch",
        "proxies-eu": "scratch",
    }
    (plan,) = FakePlan.instances
    assert set(plan.patched) == {"networks-eu", "replicas-eu"}
    assert "ams" in plan.patched["networks-eu"]["regions"]
    assert plan.closed
    reps = results["eu"][2]
    assert reps.changes == {"create": 1}
    assert reps.note == "previewed against the planned outputs of networks-eu"
    assert [(c.path, c.kind) for c in results["eu"][1].output_changes] == [("regions.ams", "add")]


def test_preview_without_a_file_backend_says_what_waits(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planned, "available", lambda: False)
    engine.known = deployed("eu")
    engine.plans["networks-eu"] = _networks_plan()
    results = rollout.run(["eu"], "preview", layers=["networks", "replicas"])
    reps = results["eu"][1]
    assert reps.status == "pending" and "previewed after networks-eu is applied" in reps.note
    assert ("real", "preview", "replicas-eu") not in engine.calls


def test_preview_of_a_layer_whose_upstream_is_missing_is_blocked_with_a_clear_message(
    engine: Engine,
) -> None:
    engine.known = {"accounts-eu": 3}
    results = rollout.run(["eu"], "preview", layers=["proxies"])
    (r,) = results["eu"]
    assert r.status == "blocked"
    assert r.error.startswith(
        "networks-eu, replicas-eu are not deployed yet, and proxies-eu reads their outputs"
    )
    assert "unknown stack" not in r.error


def test_preview_of_a_new_group_goes_as_far_as_it_can(engine: Engine) -> None:
    engine.known = {}
    engine.plans["accounts-ca"] = [
        pre("create", urn("accounts-ca", "account-account"), new=env(RUN_AS="x")),
        stack_outputs("accounts-ca", None, {"user": UNKNOWN_SENTINEL, "group": "ca"}),
    ]
    engine.plans["networks-ca"] = [stack_outputs("networks-ca", None, {"regions": {"yyz": {}}})]
    engine.fail["replicas-ca"] = "secret secret/dbfleet/x/ca/postgres does not exist"
    results = rollout.run(["ca"], "preview")
    st = statuses(results)
    assert st == {
        "accounts-ca": "changes",
        "networks-ca": "changes",
        "replicas-ca": "pending",
        "proxies-ca": "pending",
    }
    assert all(w == "scratch" for w, _, _ in engine.calls)  # nothing is created in the real backend
    assert "can be previewed once accounts-ca, networks-ca are applied" in results["ca"][2].note
    assert "(dbfleet up ca)" in results["ca"][2].note
    # what the engine said is the missing upstream, not a fault of the stack
    assert results["ca"][2].error == "" and "pulumi up" not in results["ca"][2].note
    assert "once replicas-ca is applied" in results["ca"][3].note


def test_a_failed_preview_is_an_error_when_its_upstream_exists(engine: Engine) -> None:
    engine.known = deployed("eu")
    engine.plans["networks-eu"] = _networks_plan()
    engine.fail["replicas-eu"] = "KeyError: 'ams'"
    results = rollout.run(["eu"], "preview")
    st = statuses(results)
    assert (st["replicas-eu"], st["proxies-eu"]) == ("failed", "not started")
    assert "previewed against the planned outputs of networks-eu" in results["eu"][2].note


def test_unknown_layers_and_actions_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="unknown layer"):
        rollout.run(["eu"], "up", layers=["databases"])
    with pytest.raises(ValueError, match="unknown action"):
        rollout.run(["eu"], "refresh")


def test_error_text_keeps_the_specific_engine_errors() -> None:
    exc = EngineError(
        "Updating (replicas-us):\n"
        "  pulumi:pulumi:Stack dbfleet-replicas-us running error: port 5432 in use\n"
        "error: port 5432 in use\n"
        "error: update failed\n"
    )
    assert rollout._error_text(exc) == "error: port 5432 in use"


def test_stack_result_json_names_group_and_layer() -> None:
    r = results.StackResult("replicas-eu", "applied", 2.0, {"create": 1})
    doc: dict[str, Any] = r.to_json()
    assert (doc["group"], doc["layer"], doc["changes"]) == ("eu", "replicas", {"create": 1})


def test_the_event_log_watcher_stops_when_the_engine_never_started(tmp_path) -> None:
    """pulumi/pulumi#16095: without a cancel event the watcher thread never ended and
    kept `dbfleet preview` from exiting after e.g. a wrong passphrase."""
    import json as _json

    from pulumi.automation import _stack

    log = tmp_path / "events.jsonl"
    log.write_text(
        _json.dumps({"diagnosticEvent": {"message": "boom", "severity": "error"}}) + "\n"
    )
    seen = []
    watcher = threading.Thread(target=_stack._watch_logs, args=(str(log), seen.append))
    watcher.start()
    _stack._cleanup(None, watcher)
    assert not watcher.is_alive()
    assert [e.diagnostic_event.message for e in seen] == ["boom"]


def test_the_event_log_watcher_waits_for_the_rest_of_a_half_written_event(tmp_path) -> None:
    """The engine writes a long event in several writes; a watcher that parsed the
    first part died on the JSON error and lost every later event, the summary too
    ("summary event never found")."""
    import json as _json

    from pulumi.automation import _stack

    log = tmp_path / "events.jsonl"
    first = _json.dumps({"diagnosticEvent": {"message": "x" * 5000, "severity": "info"}}) + "\n"
    summary = _json.dumps({"summaryEvent": {"resourceChanges": {"same": 3}}}) + "\n"
    cancel = _json.dumps({"cancelEvent": {}}) + "\n"
    log.write_text(first[:1743])  # the engine is in the middle of this line
    seen = []
    watcher = threading.Thread(target=_stack._watch_logs, args=(str(log), seen.append))
    watcher.start()
    # Once the watcher has read the half line (its file offset, from /proc), the
    # engine finishes the line and goes on.
    deadline = time.monotonic() + 10
    while _read_offset(log) != 1743:
        assert watcher.is_alive() and time.monotonic() < deadline, "the watcher never read the log"
        time.sleep(0.01)
    with log.open("a") as fh:
        fh.write(first[1743:] + summary + cancel)
    watcher.join(10)
    assert not watcher.is_alive()
    assert [e.diagnostic_event.message for e in seen if e.diagnostic_event] == ["x" * 5000]
    assert [e.summary_event.resource_changes for e in seen if e.summary_event] == [{"same": 3}]


def test_the_event_log_watcher_drops_the_torn_last_line_of_a_killed_engine(
    tmp_path, monkeypatch
) -> None:
    import json as _json

    from pulumi.automation import _stack

    died = []
    monkeypatch.setattr(threading, "excepthook", died.append)

    log = tmp_path / "events.jsonl"
    done = _json.dumps({"diagnosticEvent": {"message": "ok", "severity": "info"}}) + "\n"
    log.write_text(done + done[:20])
    seen = []
    watcher = threading.Thread(target=_stack._watch_logs, args=(str(log), seen.append))
    watcher.start()
    _stack._cleanup(None, watcher)
    assert not watcher.is_alive()
    assert [e.diagnostic_event.message for e in seen] == ["ok"]
    assert died == []


def _read_offset(path) -> int | None:
    """Where this process's open reader of `path` is (its offset in /proc/self/fdinfo)."""
    import os

    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                with open(f"/proc/self/fdinfo/{fd}") as info:
                    for row in info:
                        if row.startswith("pos:"):
                            return int(row.split()[1])
        except OSError:
            continue
    return None
