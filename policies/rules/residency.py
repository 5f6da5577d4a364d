"""Residency: a region group's nodes, proxies, data and secrets stay in its zone.

Two policies: `residency` judges each HostScript before it is created (where it lives,
whom it admits, where it sends reads, writes and replication, where its data goes);
`residency-outputs` judges what a stack exports (the regions, endpoints, zone and Vault
secret path other layers and the CLI build on), which exists only once the program ran.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from pulumi_policy import PolicyResource, ResourceValidationPolicy, StackValidationPolicy

from dbfleet.model.catalogue import REGIONS
from dbfleet.vault import secret_path

from .common import (
    MANDATORY,
    UNKNOWN,
    HostScriptView,
    StackContext,
    host_script_validator,
    leaves,
    plain,
    reveal,
    stack_resource,
    stack_validator,
)

DESCRIPTION = (
    "Residency: every node, proxy, data directory and secret path of a region group stays in "
    "regions of the group's residency zone, and a proxy or replica reads and writes only "
    "through regions of its own group."
)
REMEDIATION = (
    "keep every address, endpoint and path of a group its own: a region belongs to one group, "
    "in that group's zone (fix the fleet file, then `dbfleet validate`), and a component must "
    "take addresses from the networks layer of its own group, never from another group."
)

OUTPUTS_DESCRIPTION = (
    "Residency of stack outputs: the regions, endpoints, zone and Vault secret path a stack "
    "exports belong to its own group and zone."
)
OUTPUTS_REMEDIATION = (
    "export only the group's own regions and addresses, its zone from the fleet file and its "
    "secret path `dbfleet/<fleet>/<group>/postgres`; the layers build these from the fleet "
    "file, so a wrong value means a changed layer or a hand-edited program."
)

# Where a resource lives: a region here must be in the group's zone. (Whom a node
# admits, ALLOWED_HOSTS, is the authentication policy's to judge.)
_PLACED = ("PG_HOST", "PROXY_HOST", "POOL_HOST", "ETCD_HOST")
# Where a resource sends data: only the group's own regions.
_SENDS = {
    "ETCD_HOSTS": "node's etcd member",
    "ETCD_CLUSTER": "etcd member's peer",
    "ETCD_CLIENTS": "etcd member's peer",
    "MEMBERS": "group's Patroni member",
    "WRITE_BACKEND": "proxy's write backend",  # a proxy deployed before Patroni
    "WRITE_SERVERS": "proxy's write server",
    "READ_LOCAL": "proxy's local read backend",
    "READ_BACKUPS": "proxy's read backup",
    "WRITE_TARGET": "pooler's write target",
    "READ_TARGET": "pooler's read target",
    "PRIMARY": "pooler's primary",
}
_NODE_DIR = re.compile(r"(?P<region>[a-z]{3})-\d+")
_PROXY_DIR = re.compile(r"proxy-(?P<region>[a-z]{3})")
_ETCD_DIR = re.compile(r"etcd-(?P<region>[a-z]{3})")
_POOL_DIR = re.compile(r"pooler-(?P<region>[a-z]{3})")


def _out_of_zone(ctx: StackContext, region: str) -> bool:
    return REGIONS[region].zone != ctx.zone


def resource_problems(ctx: StackContext, view: HostScriptView) -> list[str]:
    """Why this HostScript would put data of `ctx`'s group outside its zone or group."""
    problems: list[str] = []
    named = view.region_in_name
    if named and _out_of_zone(ctx, named):
        problems.append(
            f"{view.name} is named after region {ctx.describe_region(named)}, outside zone "
            f"{ctx.zone} of group {ctx.group_name}"
        )
    for key in _PLACED:
        for address in view.addresses(key):
            region = ctx.region_of_address(address)
            if region and _out_of_zone(ctx, region):
                problems.append(
                    f"{view.name}: {key} {address} is the address of region "
                    f"{ctx.describe_region(region)}, outside zone {ctx.zone} of group {ctx.group_name}"
                )
    for key, what in _SENDS.items():
        for address in view.addresses(key):
            region = ctx.region_of_address(address)
            if region in ctx.group.regions:
                continue
            if region:
                problems.append(
                    f"{view.name}: the {what} {address} is region {ctx.describe_region(region)}; "
                    f"group {ctx.group_name} may only use its own regions "
                    f"({', '.join(ctx.group.regions)})"
                )
            else:
                problems.append(
                    f"{view.name}: the {what} {address} is not the address of any region of the "
                    f"fleet ({ctx.fleet.network.cidr}), so it cannot be shown to stay in zone {ctx.zone}"
                )
    problems += _path_problems(ctx, view)
    return problems


# Paths a HostScript keeps data in: (variable, what it is, pattern of its last part).
# A node or proxy directory sits directly in the group's data root; DATA_ROOT is it.
_PATHS: tuple[tuple[str, str, re.Pattern[str] | None], ...] = (
    ("DATA_ROOT", "data root", None),
    ("NODE_DIR", "node directory", _NODE_DIR),
    ("ETCD_DIR", "etcd directory", _ETCD_DIR),
    ("PROXY_DIR", "proxy directory", _PROXY_DIR),
    ("POOL_DIR", "pooler directory", _POOL_DIR),
)


def _path_problems(ctx: StackContext, view: HostScriptView) -> list[str]:
    problems: list[str] = []
    root = ctx.data_root_name
    for key, what, pattern in _PATHS:
        for value in view.listed(key):
            path = PurePosixPath(value)
            owner_dir = path if pattern is None else path.parent
            if owner_dir.name != root:
                other = _group_of_root(ctx, owner_dir.name)
                whose = f", the data root of group {other}" if other else ""
                problems.append(
                    f"{view.name}: {key} {value} is not inside the data root of group "
                    f"{ctx.group_name} (a directory named {root}); it is under "
                    f"{owner_dir.name or '/'}{whose}"
                )
            match = pattern.fullmatch(path.name) if pattern else None
            region = match["region"] if match else None
            if region in REGIONS and _out_of_zone(ctx, region):
                problems.append(
                    f"{view.name}: the {what} {value} is for region {ctx.describe_region(region)}, "
                    f"outside zone {ctx.zone} of group {ctx.group_name}"
                )
    return problems


def _group_of_root(ctx: StackContext, name: str) -> str | None:
    prefix = f"{ctx.fleet.name}-"
    group = name[len(prefix) :] if name.startswith(prefix) else None
    return group if group in ctx.fleet.groups else None


# --------------------------------------------------------------------------- outputs

_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
# Outputs whose keys or items are region codes.
_REGION_KEYED = (
    "regions",
    "nearest",
    "nodes",
    "read_endpoints",
    "write_endpoints",
    "connection_uris",
)


def output_problems(ctx: StackContext, outputs: dict[str, Any]) -> list[str]:
    """Why what this stack exports would name a region or address outside its group/zone."""
    problems: list[str] = []
    own = ctx.group.regions
    expected_path = secret_path(ctx.fleet.name, ctx.group_name)
    # output -> (the one value it may have, why), for outputs that name the group's place.
    expected = {
        "zone": (ctx.zone, f", group {ctx.group_name} is pinned to zone {ctx.zone}"),
        "group": (ctx.group_name, f", this stack belongs to group {ctx.group_name}"),
        "secret_path": (
            expected_path,
            (
                f": the passwords of group {ctx.group_name} live at {expected_path}, never "
                "under another group's path"
            ),
        ),
    }
    for key, (want, why) in expected.items():
        if key in outputs and (value := reveal(outputs[key])) not in (want, UNKNOWN):
            problems.append(f"output {key} is {value!r}{why}")
    primary = reveal(outputs.get("primary_region"))
    if isinstance(primary, str) and primary not in own:
        problems.append(
            f"output primary_region is {primary}, not a region of group {ctx.group_name}"
        )

    for key in _REGION_KEYED:
        value = reveal(outputs.get(key))
        for region in sorted(_region_codes(value)):
            if region not in own:
                problems.append(
                    f"output {key} names region {ctx.describe_region(region)}, which is not a "
                    f"region of group {ctx.group_name}"
                )
    for key, value in outputs.items():
        for text in _strings(value):
            for address in sorted(set(_IPV4.findall(text))):
                region = ctx.region_of_address(address)
                if region and region not in own:
                    # Only the address and the output's name: the value may be a secret URI.
                    problems.append(
                        f"output {key} holds the address {address} of region "
                        f"{ctx.describe_region(region)}, which is not a region of group {ctx.group_name}"
                    )
    return problems


def _region_codes(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        found |= {k for k in value if k in REGIONS}
        for v in value.values():
            if isinstance(v, list):
                found |= {x for x in v if isinstance(x, str) and x in REGIONS}
    elif isinstance(value, list):
        found |= {x for x in value if isinstance(x, str) and x in REGIONS}
    return found


def _strings(value: Any) -> list[str]:
    """Every string inside a `plain` value, secret or not."""
    return [leaf.value for leaf in leaves(value) if isinstance(leaf.value, str)]


def stack_output_problems(
    ctx: StackContext, resources: list[PolicyResource], config: Mapping[str, Any]
) -> list[tuple[str | None, str]]:
    """`output_problems` of the stack's outputs, each reported on the stack."""
    stack = stack_resource(resources)
    if stack is None:
        return []
    outputs = plain(stack.props)
    return [
        (stack.urn, problem)
        for problem in output_problems(ctx, outputs if isinstance(outputs, dict) else {})
    ]


residency = ResourceValidationPolicy(
    name="residency",
    description=DESCRIPTION,
    # Residency has no settings: where a region belongs is the fleet file's to say.
    validate=host_script_validator(
        lambda ctx, view, _config: resource_problems(ctx, view), REMEDIATION
    ),
    enforcement_level=MANDATORY,
)

residency_outputs = StackValidationPolicy(
    name="residency-outputs",
    description=OUTPUTS_DESCRIPTION,
    validate=stack_validator(stack_output_problems, OUTPUTS_REMEDIATION),
    enforcement_level=MANDATORY,
)

POLICIES = [residency, residency_outputs]
