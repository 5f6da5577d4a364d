"""Authentication: scram-sha-256 only, pg_hba open only to the group, a replication role.

The node script renders pg_hba.conf from ALLOWED_HOSTS alone, one scram-sha-256 line per
address (components/scripts/patroni.sh), and replicates as the script-defined role
`replicator`; the group's leadership (patroni_leader.sh) creates the roles. So a node is
sound when ALLOWED_HOSTS lists only its group's region addresses (plus 127.0.0.1 on the
local target, the source address of every loopback client there:
`dbfleet.model.topology.LOCAL_SOURCE`), nothing asks for another method or extra pg_hba
lines, replication runs as `replicator`, and that role has a password of its own; the
leadership is judged the same way (the application's role is created there).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from pulumi_policy import PolicyConfigSchema, ResourceValidationPolicy

from dbfleet.model.topology import LOCAL_SOURCE

from .common import (
    LEADER_SCRIPT,
    MANDATORY,
    HostScriptView,
    StackContext,
    config_bool,
    host_script_validator,
    reveal,
)

DESCRIPTION = (
    "Authentication: PostgreSQL uses scram-sha-256 only, its pg_hba admits only the group's "
    "region addresses (and 127.0.0.1 on the local target), and replication uses its own role."
)
REMEDIATION = (
    "build ALLOWED_HOSTS from the networks layer's addresses of the node's own group (plus "
    "127.0.0.1 on the local target), leave the authentication method to the node scripts "
    "(scram-sha-256) with no extra pg_hba lines, replicate as `replicator` with its own "
    "password, and give applications a role of their own."
)

METHOD = "scram-sha-256"
REPLICATION_ROLE = "replicator"
SUPERUSER = "postgres"
# Variables that would choose an authentication method or password hashing.
_METHOD_VAR = re.compile(r"(?i)(auth|hba).*method|method$|password_encryption")
# Variables that would add to pg_hba.conf beside ALLOWED_HOSTS.
_HBA_VAR = re.compile(r"(?i)hba")
_REPLICATION_USER_VAR = re.compile(r"(?i)^(pg_)?replicat\w*_(user|role)$")


def allowed_sources(ctx: StackContext, view: HostScriptView, config: Mapping[str, Any]) -> set[str]:
    allowed = set(ctx.group_hosts)
    if view.is_local and config_bool(config, "allowLocalSource", True):
        allowed.add(LOCAL_SOURCE)
    return allowed


def problems(ctx: StackContext, view: HostScriptView, config: Mapping[str, Any]) -> list[str]:
    # The leadership too: it creates the application's role and sets the passwords.
    if not (view.is_node or view.script == LEADER_SCRIPT):
        return []
    found: list[str] = []
    env = view.environment
    allowed = allowed_sources(ctx, view, config)
    for entry in view.listed("ALLOWED_HOSTS"):
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            found.append(f"{view.name}: ALLOWED_HOSTS entry {entry!r} is not an address")
            continue
        if ctx.target == "ssh" and entry in ctx.fleet.firewall.operators:
            continue  # the operators' networks the fleet file names (dbfleet status)
        if network.num_addresses != 1:
            found.append(
                f"{view.name}: ALLOWED_HOSTS entry {entry} is a network of {network.num_addresses} "
                "addresses; pg_hba may admit only single addresses of the group"
            )
        elif str(network.network_address) not in allowed:
            address = str(network.network_address)
            region = ctx.region_of_address(address)
            whose = f" (region {ctx.describe_region(region)})" if region else ""
            found.append(
                f"{view.name}: ALLOWED_HOSTS admits {address}{whose}, which is not an address of "
                f"group {ctx.group_name} ({', '.join(sorted(allowed))})"
            )
    for key, value in sorted(env.items()):
        if key == "ALLOWED_HOSTS":
            continue
        if _METHOD_VAR.search(key):
            if value.strip().lower() != METHOD:
                found.append(
                    f"{view.name}: {key} asks for {value!r}; PostgreSQL must use {METHOD} only"
                )
        elif _HBA_VAR.search(key) and value.strip():
            found.append(
                f"{view.name}: {key} adds to pg_hba.conf beside ALLOWED_HOSTS; pg_hba must "
                f"admit only the group's addresses, with {METHOD}"
            )
        elif _REPLICATION_USER_VAR.match(key) and value != REPLICATION_ROLE:
            found.append(
                f"{view.name}: {key} is {value!r}; replication must use its own role {REPLICATION_ROLE}"
            )
    app_user = env.get("APP_USER")
    if app_user in (REPLICATION_ROLE, SUPERUSER):
        found.append(
            f"{view.name}: APP_USER is {app_user!r}; the application must not share the "
            f"{'replication' if app_user == REPLICATION_ROLE else 'superuser'} role"
        )
    found += _shared_passwords(view)
    return found


def _shared_passwords(view: HostScriptView) -> list[str]:
    """The replication role's own password must not be another role's (names only)."""
    secrets = reveal(view.props.get("secret_environment"))
    if not isinstance(secrets, dict):
        return []
    replication = secrets.get("PG_REPLICATION_PASSWORD")
    if not isinstance(replication, str) or not replication:
        return []
    return [
        f"{view.name}: PG_REPLICATION_PASSWORD is the same as {other}; the replication role "
        "needs a password of its own"
        for other in ("PG_SUPERUSER_PASSWORD", "PG_APP_PASSWORD")
        if secrets.get(other) == replication
    ]


authentication = ResourceValidationPolicy(
    name="authentication",
    description=DESCRIPTION,
    validate=host_script_validator(problems, REMEDIATION),
    enforcement_level=MANDATORY,
    config_schema=PolicyConfigSchema(
        properties={
            "allowLocalSource": {
                "type": "boolean",
                "default": True,
                "description": "On the local target, also admit 127.0.0.1 (the source address of "
                "every loopback client). Turning it off breaks replication on the local target.",
            }
        }
    ),
)

POLICIES = [authentication]
