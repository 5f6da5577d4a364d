"""Durability: enough regions per group, and a primary that a delete cannot take away.

Like Fauna's region groups, which keep three geographically distributed replicas, a
group should span at least `minRegions` regions (default 3): its etcd cluster has one
member per region and needs a majority, so a group of fewer than three regions cannot
fail over after losing a region. Outside the local demo the node the fleet file
prefers as leader must be protected (`protect=True`, inherited from its PatroniNode)
so that no `up` or `destroy` deletes it by accident.

Advisory by default (a one- or two-region group is a valid choice for a test fleet);
set `enforcementLevel: mandatory` in the pack config to block instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import PolicyConfigSchema, PolicyResource, StackValidationPolicy

from .common import (
    ADVISORY,
    HostScriptView,
    StackContext,
    config_bool,
    config_int,
    stack_validator,
)

DESCRIPTION = (
    "Durability: a region group spans at least minRegions regions (default 3, as Fauna's "
    "region groups keep three geographically distributed replicas), and outside the local "
    "demo the primary's node is protected against deletion."
)
REMEDIATION = (
    "add regions of the group's zone to the group in the fleet file (`dbfleet validate`, then "
    "`dbfleet up <group>`), and protect the primary (ResourceOptions(protect=True) on its "
    "PatroniNode) on any target but local; or lower minRegions in the pack config."
)

DEFAULT_MIN_REGIONS = 3


def problems(
    ctx: StackContext, resources: list[PolicyResource], config: Mapping[str, Any]
) -> list[tuple[str | None, str]]:
    """(urn or None for the whole stack, problem)."""
    found: list[tuple[str | None, str]] = []
    min_regions = config_int(config, "minRegions", DEFAULT_MIN_REGIONS)
    nodes = [
        (r, v)
        for r in resources
        if (v := HostScriptView.of(r.resource_type, r.urn, r.name, r.props)) is not None
        and v.is_node
    ]
    if ctx.layer == "replicas" and nodes:
        regions = sorted(
            {
                r
                for _, v in nodes
                if (
                    r := ctx.region_of_address(v.environment.get("PG_HOST", "")) or v.region_in_name
                )
            }
        )
        where, counted = "keeps copies of its data in", len(regions)
    else:
        regions, where, counted = list(ctx.group.regions), "has", len(ctx.group.regions)
    if counted < min_regions:
        found.append(
            (
                None,
                (
                    f"group {ctx.group_name} {where} {counted} region(s) ({', '.join(regions)}); "
                    f"at least {min_regions} are required to survive the loss of a region (its "
                    "etcd cluster, one member per region, needs a majority to fail over)"
                ),
            )
        )
    protect_local = config_bool(config, "protectPrimaryOnLocal", False)
    for resource, view in nodes:
        if view.environment.get("MEMBER_NAME") != f"{ctx.group.primary}-0":
            continue
        demo = view.is_local and ctx.target == "local"
        if (protect_local or not demo) and not resource.opts.protect:
            target = (
                "the local target"
                if demo
                else f"target {ctx.target} over a {view.connection.get('kind') or 'local'} connection"
            )
            found.append(
                (
                    resource.urn,
                    (
                        f"{view.name}: the primary of group {ctx.group_name} on {target} is not "
                        "protected, so a delete or replacement would destroy the only writable copy"
                    ),
                )
            )
    return found


durability = StackValidationPolicy(
    name="durability",
    description=DESCRIPTION,
    validate=stack_validator(problems, REMEDIATION),
    enforcement_level=ADVISORY,
    config_schema=PolicyConfigSchema(
        properties={
            "minRegions": {
                "type": "integer",
                "minimum": 1,
                "default": DEFAULT_MIN_REGIONS,
                "description": "Fewest regions a group may span.",
            },
            "protectPrimaryOnLocal": {
                "type": "boolean",
                "default": False,
                "description": "Also require a protected primary on the local target (the demo).",
            },
        }
    ),
)

POLICIES = [durability]
