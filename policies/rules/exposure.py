"""Exposure: databases and proxies listen only where the networks layer put them.

A PostgreSQL node listens on PG_HOST:PG_PORT and its Patroni REST API on
PG_HOST:REST_PORT, an etcd member on ETCD_HOST with its client and peer ports, a proxy on
PROXY_HOST with its read, write and stats ports, and a pooler on POOL_HOST:POOL_PORT. Each must be its own region's address and ports from the network
plan of the fleet file (`dbfleet.model.topology.plan_network`, the function the networks layer
exports). A bind to every interface (0.0.0.0, ::) or to an address outside loopback is
a public bind: refused unless the pack config names that exact resource and address,
with a reason, in `publicBindExceptions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import PolicyConfigSchema, ResourceValidationPolicy

from .common import (
    ETCD_SCRIPT,
    MANDATORY,
    HostScriptView,
    StackContext,
    host_script_validator,
    is_loopback,
    is_wildcard,
)

DESCRIPTION = (
    "Exposure: databases and proxies listen only on the loopback/private address and ports "
    "the networks layer assigned to their region; a public bind (0.0.0.0, ::, a non-loopback "
    "address) needs an explicit, named exception in the pack config."
)
REMEDIATION = (
    "take the listen address and ports from the networks layer's `regions` output (the fleet "
    "file's network plan) for the resource's own region; if a public bind is really wanted, "
    "add {resource, address, reason} (and optionally stack) to the exposure policy's "
    "publicBindExceptions in the policy pack config."
)


def _listeners(view: HostScriptView) -> list[tuple[str, str, str, str | None]]:
    """(address variable, address, port variable, port) of every socket it listens on.
    A variable that is missing (or not known yet, in a preview) is not judged."""
    env = view.environment
    if view.is_node:
        # Patroni's REST API listens beside PostgreSQL (it can switch the leader over).
        pairs = [("PG_HOST", "PG_PORT"), ("PG_HOST", "REST_PORT")]
    elif view.script == ETCD_SCRIPT:
        # etcd has no authentication here: whoever reaches it can take the leader lock.
        pairs = [("ETCD_HOST", "ETCD_CLIENT_PORT"), ("ETCD_HOST", "ETCD_PEER_PORT")]
    elif view.is_proxy:
        pairs = [("PROXY_HOST", p) for p in ("READ_PORT", "WRITE_PORT", "STATS_PORT")]
    elif view.is_pooler:
        pairs = [("POOL_HOST", "POOL_PORT")]
    else:
        return []
    return [(h, env[h], p, env.get(p)) for h, p in pairs if h in env]


def excepted(config: Mapping[str, Any], stack: str, name: str, address: str) -> bool:
    """True when publicBindExceptions names this resource (and stack) with this address."""
    for entry in config.get("publicBindExceptions") or []:
        if not isinstance(entry, Mapping) or not str(entry.get("reason") or "").strip():
            continue
        if entry.get("resource") != name or str(entry.get("address")) != address:
            continue
        if entry.get("stack") not in (None, "", "*", stack):
            continue
        return True
    return False


def problems(ctx: StackContext, view: HostScriptView, config: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    nets = ctx.nets
    assigned = ctx.group_hosts
    region = view.region_in_name
    if region not in nets:
        region = None
    # An address is judged once, however many ports listen on it.
    seen_public: set[str] = set()
    seen_unassigned: set[str] = set()
    for host_var, host, port_var, port in _listeners(view):
        # On the ssh target a host's own address is where its services listen; the
        # networks layer's firewall decides who reaches it.
        own_host = ctx.target == "ssh" and host in assigned
        if is_wildcard(host) or not (is_loopback(host) or own_host):
            if host in seen_public:
                continue
            seen_public.add(host)
            if excepted(config, ctx.stack, view.name, host):
                continue
            what = "every interface" if is_wildcard(host) else "an address outside loopback"
            found.append(
                f"{view.name}: {host_var} {host or '(empty)'} is a public bind ({what}); "
                f"no publicBindExceptions entry names resource {view.name} with address {host or '(empty)'}"
            )
            continue
        own = set(nets[region].node_hosts or (nets[region].host,)) if region else set()
        if host not in assigned or (own and host not in own):
            if host in seen_unassigned:
                continue
            seen_unassigned.add(host)
            expected = " or ".join(sorted(own or assigned))
            found.append(
                f"{view.name}: {host_var} {host} is not the address the networks layer assigned "
                f"to {'region ' + region if region else 'any region of group ' + ctx.group_name} ({expected})"
            )
            continue
        net = nets[assigned[host]]
        allowed = {
            "PG_PORT": set(net.node_ports),
            "REST_PORT": set(net.patroni_ports),
            "ETCD_CLIENT_PORT": {net.etcd_port},
            "ETCD_PEER_PORT": {net.etcd_peer_port},
            "READ_PORT": {net.read_port},
            "WRITE_PORT": {net.write_port},
            "STATS_PORT": {net.stats_port},
            "POOL_PORT": {net.pool_port},
        }[port_var]
        if port is not None and (not port.isdigit() or int(port) not in allowed):
            found.append(
                f"{view.name}: {port_var} {port or '(empty)'} is not a port the networks layer "
                f"assigned on {host} ({', '.join(str(p) for p in sorted(allowed))})"
            )
    return found


exposure = ResourceValidationPolicy(
    name="exposure",
    description=DESCRIPTION,
    validate=host_script_validator(problems, REMEDIATION),
    enforcement_level=MANDATORY,
    config_schema=PolicyConfigSchema(
        properties={
            "publicBindExceptions": {
                "type": "array",
                "default": [],
                "description": "Named exceptions: each lets one resource listen on one public address.",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["resource", "address", "reason"],
                    "properties": {
                        "resource": {
                            "type": "string",
                            "description": "resource name, e.g. fra-haproxy",
                        },
                        "address": {
                            "type": "string",
                            "description": "the bind address, e.g. 0.0.0.0",
                        },
                        "stack": {
                            "type": "string",
                            "description": "only in this stack (default: any)",
                        },
                        "reason": {
                            "type": "string",
                            "minLength": 1,
                            "description": "why it may be public",
                        },
                    },
                },
            }
        }
    ),
)

POLICIES = [exposure]
