"""Recording Pulumi mocks: every registered resource is kept, so a test can build
a component or a whole layer and assert on the inputs of what it registered. Also the
unit fleet the policy tests judge against (`unit_fleet`)."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest

# Cyclic GC: about 0.7 s of a unit run went to the collector walking objects that live
# for the whole run (pulumi, grpc, pydantic, the collected test modules). Freeze those
# as they are imported, and collect the older generations less often: what the tests
# make is still collected, just with less re-scanning of the permanent objects.
gc.set_threshold(10_000, 50, 100)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    gc.freeze()


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.freeze()


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    stack_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: list[Registered] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs)))
        if args.typ == "pulumi:pulumi:StackReference":
            name = args.inputs.get("name") or args.name
            if name not in self.stack_outputs:
                raise LookupError(f"unknown stack {name}")
            return f"{name}-id", {
                "name": name,
                "outputs": self.stack_outputs[name],
                "secretOutputNames": [],
            }
        outs = dict(args.inputs)
        if args.typ == "pulumi-python:dynamic:Resource":
            outs["summary"] = "ok"
        return f"{args.name}-id", outs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def named(self, name: str) -> Registered:
        matches = [r for r in self.resources if r.name == name]
        assert matches, f"no resource named {name}; have {[r.name for r in self.resources]}"
        return matches[0]


@pytest.fixture
def mocks(request) -> RecordingMocks:
    stack = getattr(request, "param", "replicas-eu")
    m = RecordingMocks()
    pulumi.runtime.set_mocks(m, project="dbfleet", stack=stack, preview=False)
    return m


def run_program(stack: str, mocks: RecordingMocks) -> RecordingMocks:
    """Runs the Pulumi program for `stack` under `mocks`; returns once every registration
    reached them."""
    # dbfleet.program imports every layer and component: only the tests that run the
    # program pay for that, not every unit test that loads this file.
    from dbfleet.program import main as program

    pulumi.runtime.set_mocks(mocks, project="dbfleet", stack=stack, preview=False)

    @pulumi.runtime.test
    def body():
        program.run(stack)
        return pulumi.Output.from_input(1)

    body()
    return mocks


def resolve(output: pulumi.Output) -> Any:
    """The value of an Output inside a @pulumi.runtime.test (mocks settle immediately)."""
    from pulumi.runtime.sync_await import _sync_await

    return _sync_await(output.future())


def is_secret(output: pulumi.Output) -> bool:
    from pulumi.runtime.sync_await import _sync_await

    return bool(_sync_await(output.is_secret()))


# The fleet file and home the policy tests place their stacks in; tests/unit/policy_support.py
# records what the layers register for it.
UNIT_FLEET_FILE = (
    Path(__file__).resolve().parents[1] / "data" / "policy_programs" / "unit_fleet.yaml"
)
UNIT_HOME = "/srv/dbfleet"


@pytest.fixture
def unit_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Policies read the fleet file the program reads: point both at the unit fleet."""
    monkeypatch.setenv("DBFLEET_SPEC", str(UNIT_FLEET_FILE))
    monkeypatch.setenv("DBFLEET_HOME", UNIT_HOME)


@pytest.fixture(autouse=True)
def empty_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Unit tests never read a real fleet's state: the file backend every command
    would look at (the fleet-identity check, the stack list) is an empty one of
    their own, whatever the developer's shell points PULUMI_BACKEND_URL at."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{state}")
    return state
