"""Recording Pulumi mocks: every registered resource is kept, so a test can build
a component or a whole layer and assert on the inputs of what it registered."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
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


def resolve(output: pulumi.Output) -> Any:
    """The value of an Output inside a @pulumi.runtime.test (mocks settle immediately)."""
    from pulumi.runtime.sync_await import _sync_await

    return _sync_await(output.future())


def is_secret(output: pulumi.Output) -> bool:
    from pulumi.runtime.sync_await import _sync_await

    return bool(_sync_await(output.is_secret()))
