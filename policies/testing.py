"""Calling dbfleet's validators the way the engine does, for unit tests.

`PolicyPack()` serves the engine and never returns, so tests call a policy's validator
directly, with a collecting `report_violation`. Properties go through the same path as
in the analyzer: engine-style values (`secret(...)` marks, unknown sentinels) are
deserialized with secret marks kept and wrapped in pulumi-policy's unknown-checking
proxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import (
    Policy,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy import deserialize as _deserialize
from pulumi_policy.policy import PolicyCustomTimeouts
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from .rules.common import HOST_SCRIPT, STACK, deserialize_keeping_secrets

UNKNOWN_STRING = UNKNOWN_STRING_VALUE


def secret(value: Any) -> dict[str, Any]:
    """A value as the engine sends a Pulumi secret."""
    return {_deserialize.SPECIAL_SIG_KEY: _deserialize.SPECIAL_SECRET_SIG, "value": value}


def urn(
    stack: str, typ: str, name: str, parents: tuple[str, ...] = (), project: str = "dbfleet"
) -> str:
    chain = "$".join((*parents, typ))
    return f"urn:pulumi:{stack}::{project}::{chain}::{name}"


def options(protect: bool = False) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def _props(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    return unknown_checking_proxy(deserialize_keeping_secrets(dict(raw)))


@dataclass
class Resource:
    """One resource of a stack, with engine-style properties."""

    typ: str
    name: str
    props: dict[str, Any] = field(default_factory=dict)
    parents: tuple[str, ...] = ()
    protect: bool = False

    def urn(self, stack: str) -> str:
        return urn(stack, self.typ, self.name, self.parents)


def host_script(
    name: str,
    script: str,
    environment: Mapping[str, Any],
    secret_environment: Mapping[str, Any] | None = None,
    *,
    parent: str | None = None,
    connection: Mapping[str, Any] | None = None,
    protect: bool = False,
    secret_env_is_secret: bool = True,
) -> Resource:
    """A HostScript with the inputs `components.hostcmd.HostScript` registers."""
    secrets = dict(secret_environment or {})
    return Resource(
        HOST_SCRIPT,
        name,
        {
            "name": name,
            "connection": dict(
                connection or {"kind": "local", "host": "localhost", "user": "", "port": 22}
            ),
            "script": script,
            "script_sha": "0" * 64,
            "environment": dict(environment),
            "secret_environment": secret(secrets) if secret_env_is_secret else secrets,
            "replace_on_env": [],
            "check_drift": True,
            "timeout_s": 300,
            "summary": None,
        },
        parents=(parent,) if parent else (),
        protect=protect,
    )


@dataclass
class Violation:
    message: str
    urn: str | None


def run_resource_policy(
    policy: Policy, stack: str, resource: Resource, config: Mapping[str, Any] | None = None
) -> list[Violation]:
    assert isinstance(policy, ResourceValidationPolicy)
    found: list[Violation] = []
    args = ResourceValidationArgs(
        resource.typ,
        _props(resource.props),
        resource.urn(stack),
        resource.name,
        options(resource.protect),
        None,
        dict(config or {}),
    )
    policy.validate(args, lambda message, at=None: found.append(Violation(message, at)))
    return found


def run_stack_policy(
    policy: Policy,
    stack: str,
    resources: list[Resource],
    outputs: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> list[Violation]:
    """Runs a stack policy over `resources` plus the stack resource with `outputs`."""
    assert isinstance(policy, StackValidationPolicy)
    everything = [Resource(STACK, f"dbfleet-{stack}", dict(outputs or {})), *resources]
    policy_resources = [
        PolicyResource(
            r.typ, _props(r.props), r.urn(stack), r.name, options(r.protect), None, None, [], {}
        )
        for r in everything
    ]
    found: list[Violation] = []
    policy.validate(
        StackValidationArgs(policy_resources, dict(config or {})),
        lambda message, at=None: found.append(Violation(message, at)),
    )
    return found


def run_policy(
    policy: Policy,
    stack: str,
    resources: list[Resource],
    outputs: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> list[Violation]:
    """Any policy over a whole stack: resource policies see each resource in turn."""
    if isinstance(policy, StackValidationPolicy):
        return run_stack_policy(policy, stack, resources, outputs, config)
    everything = [Resource(STACK, f"dbfleet-{stack}", {}), *resources]
    return [v for r in everything for v in run_resource_policy(policy, stack, r, config)]


def with_env(resource: Resource, **changes: Any) -> Resource:
    """A copy of a HostScript with environment variables changed (None removes one)."""
    env = {k: v for k, v in {**resource.props["environment"], **changes}.items() if v is not None}
    return replace_props(resource, environment=env)


def replace_props(resource: Resource, **changes: Any) -> Resource:
    """A copy of a resource with some properties replaced."""
    return Resource(
        resource.typ,
        resource.name,
        {**resource.props, **changes},
        resource.parents,
        resource.protect,
    )
