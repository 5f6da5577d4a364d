"""Shared by the policy unit tests (tests/unit/test_policies*.py): calling a policy the
way the engine does, and the baseline every policy must pass.

`PolicyPack()` serves the engine and never returns, so tests call a policy's validator
directly, with a collecting `report_violation`. Properties go through the same path as
in the analyzer: engine-style values (`secret(...)` marks, unknown sentinels) are
deserialized with secret marks kept and wrapped in pulumi-policy's unknown-checking
proxy.

The baseline is what dbfleet's real layers register for the unit fleet (run under
recording mocks, as in test_layers.py): every policy must pass it, and the per-policy
tests break one input of it at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from pulumi_policy import (
    Policy,
    PolicyResource,
    PolicyResourceOptions,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy import deserialize as _deserialize
from pulumi_policy.policy import PolicyCustomTimeouts
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from dbfleet import vault
from dbfleet.model.spec import FleetSpec, load_fleet
from dbfleet.model.topology import nearest_first, plan_network
from policies.rules.common import HOST_SCRIPT, STACK, deserialize_keeping_secrets
from tests.unit.conftest import UNIT_FLEET_FILE, UNIT_HOME, RecordingMocks, run_program

PASSWORDS = {
    "superuser_password": "S" * 43,
    "replication_password": "R" * 43,
    "app_password": "A" * 43,
    "backup_passphrase": "B" * 43,
}

# --------------------------------------------------------------------------- engine-style resources

UNKNOWN_STRING = UNKNOWN_STRING_VALUE

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBunitCA\n-----END CERTIFICATE-----\n"


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


def _collect_into(found: list[Violation]) -> ReportViolation:
    """A `report_violation` that keeps every violation in `found`."""
    return lambda message, at=None: found.append(Violation(message, at))


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
    policy.validate(args, _collect_into(found))
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
    policy.validate(StackValidationArgs(policy_resources, dict(config or {})), _collect_into(found))
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


# --------------------------------------------------------------------------- baseline


@functools.cache
def _unit_fleet_spec() -> FleetSpec:
    """The unit fleet file, parsed once for the whole session (the models are frozen)."""
    return load_fleet(UNIT_FLEET_FILE)


def upstream_outputs(group: str) -> dict[str, dict[str, Any]]:
    """What accounts, networks and replicas of `group` export, for StackReference mocks."""
    fleet = _unit_fleet_spec()
    nets = plan_network(fleet, group)
    spec = fleet.groups[group]
    path = vault.secret_path(fleet.name, group)

    def members(region: str) -> list[dict]:
        net = nets[region]
        return [
            {
                "host": net.node_hosts[k],
                "port": port,
                "role": "primary" if (region, k) == (spec.primary, 0) else "replica",
                "rest_port": net.patroni_ports[k],
            }
            for k, port in enumerate(net.node_ports)
        ]

    return {
        f"accounts-{group}": {
            "group": group,
            "zone": spec.zone,
            "user": f"dbfleet-{group}",
            "data_root": f"{UNIT_HOME}/data/dbfleet-{group}",
            "secret_mount": "secret",
            "secret_path": path,
            "pki_mount": f"pki-dbfleet-{group}",
            "ca_certificate": CA_PEM,
        },
        f"networks-{group}": {
            "regions": {
                r: {
                    "host": n.host,
                    "node_hosts": list(n.node_hosts),
                    "postgres_port": n.postgres_port,
                    "node_ports": list(n.node_ports),
                    "read_port": n.read_port,
                    "write_port": n.write_port,
                    "stats_port": n.stats_port,
                    "pool_port": n.pool_port,
                    "patroni_ports": list(n.patroni_ports),
                    "etcd_port": n.etcd_port,
                    "etcd_peer_port": n.etcd_peer_port,
                }
                for r, n in nets.items()
            },
            "nearest": nearest_first(list(spec.regions)),
        },
        f"replicas-{group}": {
            "primary_region": spec.primary,
            "nodes": {r: {**members(r)[0], "members": members(r)} for r in spec.regions},
            "secret_mount": "secret",
            "secret_path": path,
            "app_db": "app",
            "app_user": "app",
            "read_lag_budget": spec.read_lag_budget_bytes,
            "etcd": {r: f"{n.host}:{n.etcd_port}" for r, n in nets.items()},
        },
    }


@functools.cache
def _recorded(stack: str) -> tuple:
    group = stack.split("-", 1)[1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DBFLEET_SPEC", str(UNIT_FLEET_FILE))
        mp.setenv("DBFLEET_HOME", UNIT_HOME)
        mp.setattr(vault, "client_from_env", lambda: object())
        mp.setattr(vault, "read_ca_pem", lambda c, m: CA_PEM)
        mp.setattr(vault, "ensure_group_pki", lambda *a, **k: [])
        # The CA file for this machine's clients is not written from unit tests.
        mp.setattr("dbfleet.program.layers.proxies._write_public", lambda *a: None)
        mp.setattr(vault, "read_group_secrets", lambda c, m, p, also=(): dict(PASSWORDS))
        mp.setattr(vault, "ensure_group_secrets", lambda c, m, p, also=(): dict(PASSWORDS))
        # The networks layer checks its ports on this machine; the plan is what matters here.
        mp.setattr("dbfleet.program.layers.networks.find_port_clashes", lambda *a, **k: [])
        # The replicas layer asks Patroni's REST API for the live leader: no network here.
        mp.setattr("dbfleet.program.layers.replicas.live_leader", lambda *a, **k: None)
        mocks = run_program(stack, RecordingMocks(stack_outputs=upstream_outputs(group)))
    return tuple(mocks.resources)


def program_resources(stack: str) -> list[Resource]:
    """What the real layer registers for `stack`, as the analyzer would see it.

    Mocks lose secret marks, so `secret_environment` is marked again (HostScript
    declares it with Output.secret); the engine drops internal keys like __provider.
    """
    recorded = _recorded(stack)
    # Mocks do not say who a child's parent is; dbfleet names children `<parent>-<role>`.
    components = {r.name: r.typ for r in recorded if r.typ.startswith("dbfleet:")}
    out: list[Resource] = []
    for reg in recorded:
        props = {k: v for k, v in reg.inputs.items() if not k.startswith("__")}
        if reg.typ == HOST_SCRIPT:
            props["secret_environment"] = secret(props.get("secret_environment") or {})
            parent = max((n for n in components if reg.name.startswith(n + "-")), key=len)
            out.append(Resource(reg.typ, reg.name, props, parents=(components[parent],)))
        else:
            out.append(Resource(reg.typ, reg.name, props))
    return out


def host_scripts(stack: str) -> dict[str, Resource]:
    return {r.name: r for r in program_resources(stack) if r.typ == HOST_SCRIPT}


def messages(violations) -> str:
    return "\n".join(v.message for v in violations)
