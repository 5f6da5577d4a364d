"""Engine events as the engine sends them (JSON), for the tests of what dbfleet makes
of them: the change collector, the reports, the rollout."""

from __future__ import annotations

from typing import Any

from pulumi.automation import events

from dbfleet.ops import changes
from dbfleet.ops.changes import SECRET_SIG, SIG_KEY

PASSWORD = "s3cr3t-Pa55w0rd-value-that-must-never-show"
SECRET_VALUE = {SIG_KEY: SECRET_SIG, "ciphertext": "[secret]"}


def urn(
    stack: str, name: str, type_: str = "pulumi-python:dynamic:Resource", parent: str = ""
) -> str:
    t = f"{parent}${type_}" if parent else type_
    return f"urn:pulumi:{stack}::dbfleet::{t}::{name}"


def _state(u: str, type_: str, inputs: dict | None, outputs: dict | None = None) -> dict:
    return {
        "type": type_,
        "urn": u,
        "id": "",
        "parent": "",
        "provider": "",
        "inputs": inputs,
        "outputs": outputs,
    }


def pre(
    op: str,
    u: str,
    old: dict | None = None,
    new: dict | None = None,
    keys: list[str] | None = None,
    type_: str = "pulumi-python:dynamic:Resource",
) -> events.EngineEvent:
    meta: dict[str, Any] = {"op": op, "urn": u, "type": type_, "provider": ""}
    if old is not None:
        meta["old"] = _state(u, type_, old)
    if new is not None:
        meta["new"] = _state(u, type_, new)
    if keys:
        meta["keys"] = keys
    return events.EngineEvent.from_json({"resourcePreEvent": {"metadata": meta}})


def outs(op: str, u: str, type_: str = "pulumi-python:dynamic:Resource") -> events.EngineEvent:
    meta = {"op": op, "urn": u, "type": type_, "provider": "", "new": _state(u, type_, {}, {})}
    return events.EngineEvent.from_json({"resOutputsEvent": {"metadata": meta}})


def stack_outputs(stack: str, old: dict | None, new: dict) -> events.EngineEvent:
    u = urn(stack, f"dbfleet-{stack}", changes.STACK_TYPE)
    meta = {
        "op": "same",
        "urn": u,
        "type": changes.STACK_TYPE,
        "provider": "",
        "old": _state(u, changes.STACK_TYPE, {}, old) if old is not None else None,
        "new": _state(u, changes.STACK_TYPE, {}, new),
    }
    return events.EngineEvent.from_json({"resOutputsEvent": {"metadata": meta}})


def diag(message: str, severity: str = "error", u: str | None = None) -> events.EngineEvent:
    return events.EngineEvent.from_json(
        {"diagnosticEvent": {"message": message, "severity": severity, "color": "never", "urn": u}}
    )


def policy(name: str, level: str, message: str, u: str = "") -> events.EngineEvent:
    return events.EngineEvent.from_json(
        {
            "policyEvent": {
                "policyName": name,
                "policyPackName": "dbfleet",
                "enforcementLevel": level,
                "message": message,
                "resource_urn": u,
                "color": "never",
            }
        }
    )


def env(**kw: str) -> dict:
    return {
        "script": "pg_replica.sh",
        "environment": dict(kw),
        "secret_environment": SECRET_VALUE,
        "__provider": SECRET_VALUE,
    }
