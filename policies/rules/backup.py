"""Backups: a group's backups stay in the group, and every group has them.

- `backup-residency` (mandatory): a group's pgBackRest repository is inside the group's
  own data root (`<data>/<fleet>-<group>/pgbackrest`), its stanza is the group's own
  (`<fleet>-<group>`), every node it backs up is one of the group's, and the archive
  command in the group's Patroni configuration names only that stanza and that
  configuration — so no WAL and no backup of a group can land in another group's
  repository (or another zone). On the ssh target also: the repository is on a host of
  the group (exactly one repository host), and every pgBackRest TLS server and client
  of the stack names only the group's own pgBackRest hosts (the repository host, the
  nodes it backs up, the certificate names its servers admit).
- `backups-configured` (advisory): a replicas stack with database nodes but no
  backups (an ssh group without `backup:`), or a retention of a single full backup, warns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pulumi_policy import PolicyResource, StackValidationPolicy

from components import backup

from .common import ADVISORY, MANDATORY, HostScriptView, StackContext, stack_validator

DESCRIPTION = (
    "Backups: a group's pgBackRest repository, stanza and archive command are its own (the "
    "repository in the group's data root, WAL pushed only to the group's stanza: mandatory), "
    "and every group with databases has backups keeping more than one full (advisory)."
)
REMEDIATION = (
    "declare backups with components/backup.py from the group's own accounts outputs (its "
    "data root) and stanza <fleet>-<group>, build archive_command with "
    "backup.archive_command(data_root, stanza), on the ssh target keep the repository on a "
    "host of the group (backup.repo_region) and keep full_keep >= 2 (docs/backups.md)."
)

_STANZA_ARG = re.compile(r"--stanza=(\S+)")
_CONFIG_ARG = re.compile(r"--config=(\S+)")


def _views(resources: list[PolicyResource]) -> list[HostScriptView]:
    return [
        v
        for r in resources
        if (v := HostScriptView.of(r.resource_type, r.urn, r.name, r.props)) is not None
    ]


def _inside(path: str, root: str) -> bool:
    return bool(root) and path.startswith(root.rstrip("/") + "/") and "/../" not in f"{path}/"


def _root_is_the_groups(root: str, ctx: StackContext) -> bool:
    return root.rstrip("/").rsplit("/", 1)[-1] == ctx.data_root_name


def _archive_command(view: HostScriptView) -> str | None:
    try:
        dcs = json.loads(view.environment.get("DCS_CONFIG", "") or "{}")
    except ValueError:
        return None
    params = ((dcs.get("postgresql") or {}).get("parameters")) or {}
    command = params.get("archive_command")
    return command if isinstance(command, str) else None


def _repository_problems(view: HostScriptView, ctx: StackContext, stanza: str) -> list[str]:
    env = view.environment
    root, where = env.get("DATA_ROOT", ""), env.get("BACKUP_DIR", "")
    out = []
    if not _root_is_the_groups(root, ctx):
        out.append(f"{view.name}: data root {root or '(none)'} is not group {ctx.group_name}'s")
    if not _inside(where, root):
        out.append(f"{view.name}: repository {where or '(none)'} is outside the data root {root}")
    if env.get("STANZA") != stanza:
        out.append(f"{view.name}: stanza {env.get('STANZA')} is not the group's ({stanza})")
    paths = [n.split(":", 1)[0] for n in view.listed("NODES")]
    paths += [n.split(":")[1] for n in view.listed("REMOTE_NODES") if n.count(":") >= 1]
    for path in paths:
        if not _inside(path, root):
            out.append(f"{view.name}: backs up {path}, which is not a node of the group")
    return out


def _host_problems(views: list[HostScriptView], ctx: StackContext) -> list[tuple[str, str]]:
    """The ssh target: one repository host, a host of the group; every address a
    pgBackRest configuration names is one of the stack's own pgBackRest hosts."""
    hosts = [v for v in views if v.environment.get("BACKUP_MODE") in ("repo", "node")]
    if not hosts:
        return []
    out: list[tuple[str, str]] = []
    repos = [v for v in hosts if v.environment.get("BACKUP_MODE") == "repo"]
    if len(repos) != 1:
        out.append(
            (hosts[0].urn, f"{len(repos)} repository hosts in group {ctx.group_name}, not 1")
        )
    group_hosts = ctx.group_hosts
    ours = {v.environment.get("TLS_ADDRESS") for v in hosts}
    for v in hosts:
        env = v.environment
        host = v.connection.get("host")
        if host not in group_hosts:
            out.append((v.urn, f"{v.name}: runs on {host}, which is not a host of the group"))
        named = [env.get("REPO_HOST", ""), *v.listed("TLS_CLIENTS")]
        named += [n.split(":", 1)[0] for n in v.listed("REMOTE_NODES")]
        for address in named:
            if address and address != "?" and address not in ours:
                out.append(
                    (
                        v.urn,
                        f"{v.name}: names {address}, which is not a pgBackRest host of the group",
                    )
                )
    return out


def _archive_problems(view: HostScriptView, ctx: StackContext, stanza: str) -> list[str]:
    command = _archive_command(view)
    if command is None:
        return []
    stanzas = _STANZA_ARG.findall(command)
    configs = _CONFIG_ARG.findall(command)
    root = view.environment.get("NODE_DIR", "").rsplit("/", 1)[0]
    out = []
    if stanzas != [stanza]:
        out.append(
            f"{view.name}: archive_command pushes WAL to stanza(s) {', '.join(stanzas) or '(none)'}, "
            f"not only to the group's ({stanza})"
        )
    wanted = backup.host_config_path(root) if not view.is_local else backup.config_path(root)
    if len(configs) != 1 or configs[0] != wanted:
        out.append(
            f"{view.name}: archive_command reads {', '.join(configs) or 'the default configuration'}, "
            f"not the group's ({wanted})"
        )
    return out


def residency_problems(
    ctx: StackContext, resources: list[PolicyResource], config: Mapping[str, Any]
) -> list[tuple[str | None, str]]:
    if ctx.layer != "replicas":
        return []
    stanza = backup.stanza_name(ctx.fleet.name, ctx.group_name)
    views = _views(resources)
    found: list[tuple[str | None, str]] = list(
        _host_problems([v for v in views if v.script == backup.SCRIPT], ctx)
    )
    for view in views:
        if view.script == backup.SCRIPT:
            found += [(view.urn, p) for p in _repository_problems(view, ctx, stanza)]
        elif view.is_node:
            found += [(view.urn, p) for p in _archive_problems(view, ctx, stanza)]
    return found


def configured_problems(
    ctx: StackContext, resources: list[PolicyResource], config: Mapping[str, Any]
) -> list[tuple[str | None, str]]:
    if ctx.layer != "replicas":
        return []
    views = _views(resources)
    if not any(v.is_node for v in views):
        return []
    repos = [v for v in views if v.script == backup.SCRIPT]
    if not repos:
        return [
            (
                None,
                (
                    f"group {ctx.group_name} has no backups (target {ctx.target}): a bad "
                    "DELETE reaches every replica within milliseconds and nothing brings it back"
                ),
            )
        ]
    return [
        (v.urn, f"{v.name}: only one full backup is kept (full_keep: 1)")
        for v in repos
        if v.environment.get("FULL_KEEP") == "1"
    ]


backup_residency = StackValidationPolicy(
    name="backup-residency",
    description=DESCRIPTION,
    validate=stack_validator(residency_problems, REMEDIATION),
    enforcement_level=MANDATORY,
)
backups_configured = StackValidationPolicy(
    name="backups-configured",
    description=DESCRIPTION,
    validate=stack_validator(configured_problems, REMEDIATION),
    enforcement_level=ADVISORY,
)

POLICIES = [backup_residency, backups_configured]
