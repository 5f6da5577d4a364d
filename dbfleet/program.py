"""The Pulumi program: one stack `<layer>-<group>` of the fleet file."""

from __future__ import annotations

import os
from pathlib import Path

import pulumi

from dbfleet import vault
from dbfleet.layers import accounts, networks, proxies, replicas
from dbfleet.layers.context import LayerContext
from dbfleet.spec import FleetError, default_spec_path, load_fleet
from dbfleet.stackname import StackNameError, parse_stack_name

BUILDERS = {
    "accounts": accounts.build,
    "networks": networks.build,
    "replicas": replicas.build,
    "proxies": proxies.build,
}


def dbfleet_home() -> Path:
    home = os.environ.get("DBFLEET_HOME")
    if not home:
        raise pulumi.RunError("DBFLEET_HOME is not set: run `source scripts/env.sh` first")
    return Path(home).resolve()


def run(stack_name: str) -> None:
    try:
        stack = parse_stack_name(stack_name)
    except StackNameError as exc:
        raise pulumi.RunError(str(exc)) from None
    spec = default_spec_path()
    try:
        fleet = load_fleet(spec)
    except FleetError as exc:
        raise pulumi.RunError(
            f"fleet file {spec} is invalid:\n" + "\n".join(f"  {p}" for p in exc.problems)
        ) from None
    if stack.group not in fleet.groups:
        raise pulumi.RunError(
            f"stack {stack_name}: group {stack.group!r} is not in {spec} (groups: {', '.join(fleet.groups)})"
        )
    target = fleet.group_target(stack.group)
    if target != "local":
        raise pulumi.RunError(f"groups.{stack.group}.target: target {target!r} is not implemented yet")
    ctx = LayerContext(stack=stack, fleet=fleet, home=dbfleet_home())
    try:
        BUILDERS[stack.layer](ctx)
    except vault.VaultError as exc:
        raise pulumi.RunError(str(exc)) from None
    except ValueError as exc:  # a component refused its arguments
        raise pulumi.RunError(f"stack {stack_name}: {exc}") from None
