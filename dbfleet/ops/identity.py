"""What the backend holds, seen against the fleet file: whose stacks they are, and
which groups the file no longer has.

- `refusal`: one line when a deployed stack belongs to another fleet than the fleet
  file in use (see `dbfleet.model.identity`); every command that reads or changes
  stacks asks it first, before anything is changed.
- `orphaned` / `orphan_results`: groups with deployed stacks that the fleet file no
  longer has. Nothing else would ever show them — a preview of the file's groups
  says "no changes" while their databases keep running — so `dbfleet preview` lists
  their stacks as `orphaned` (exit 2) with the command that removes them.

With the file backend the stacks' checkpoints are read straight from its directory
(plain JSON, no engine, a few milliseconds); with any other backend through the
CLI (`pulumi stack ls`, `pulumi stack output`).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dbfleet.model import identity
from dbfleet.model.identity import FleetIdentity
from dbfleet.model.spec import FleetSpec
from dbfleet.model.stackname import LAYERS, StackNameError, parse_stack_name
from dbfleet.ops.backend import file_backend_dir
from dbfleet.ops.results import StackResult, Status

STACK_TYPE = "pulumi:pulumi:Stack"
CHECKPOINT_SUFFIXES = (".json", ".json.gz")


@dataclass(frozen=True)
class DeployedStack:
    name: str
    resources: int  # 0: never deployed, or destroyed
    fleet: FleetIdentity | None  # None: the stack does not say (empty, or a stack made by hand)


# -- reading the backend ---------------------------------------------------------------
def project_name(project: Path) -> str:
    try:
        settings = yaml.safe_load((project / "Pulumi.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        settings = {}
    return str(settings.get("name") or "dbfleet") if isinstance(settings, dict) else "dbfleet"


def checkpoint_files(state: Path, project: str) -> dict[str, Path]:
    """stack → its checkpoint in a file backend (project-scoped layout, or the legacy
    one with every stack directly under `.pulumi/stacks`)."""
    found: dict[str, Path] = {}
    for folder in (state / ".pulumi" / "stacks", state / ".pulumi" / "stacks" / project):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            for suffix in CHECKPOINT_SUFFIXES:
                if path.is_file() and path.name.endswith(suffix):
                    found[path.name[: -len(suffix)]] = path
    return found


def read_checkpoint(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return json.loads(raw)


def stack_checkpoint(stack: str, project: Path | None = None) -> dict[str, Any] | None:
    """`stack`'s checkpoint in the file backend; None with another backend or no such stack."""
    state = file_backend_dir()
    if state is None:
        return None
    if project is None:
        from dbfleet.ops.rollout import project_dir

        project = project_dir()
    path = checkpoint_files(state, project_name(project)).get(stack)
    return read_checkpoint(path) if path is not None else None


def stack_of_checkpoint(name: str, data: Mapping[str, Any]) -> DeployedStack:
    latest = (data.get("checkpoint") or {}).get("latest") or {}
    resources = latest.get("resources") or []
    root = next((r for r in resources if r.get("type") == STACK_TYPE), None)
    outputs = (root or {}).get("outputs") or {}
    return DeployedStack(name, len(resources), identity.from_outputs(outputs))


def deployed(project: Path) -> dict[str, DeployedStack]:
    """Every stack of the project in the backend."""
    state = file_backend_dir()
    if state is not None:
        out = {}
        for name, path in checkpoint_files(state, project_name(project)).items():
            try:
                out[name] = stack_of_checkpoint(name, read_checkpoint(path))
            except (OSError, ValueError):
                # Being replaced right now, or torn by a killed engine (the rollout
                # repairs what it can): it says nothing about whose it is.
                out[name] = DeployedStack(name, 0, None)
        return out
    from dbfleet.ops import rollout  # the Automation API, only for other backends

    counts = rollout.deployed_stacks()
    # accounts-<g> says whose the group is (its Vault path); one read per group.
    accounts = [s for s, n in counts.items() if n > 0 and s.startswith("accounts-")]
    outputs = rollout.many_outputs(accounts) if accounts else {}
    return {
        s: DeployedStack(s, n, identity.from_outputs(outputs.get(s))) for s, n in counts.items()
    }


# -- the checks ------------------------------------------------------------------------
def refusal(
    fleet: FleetSpec, spec: Path, stacks: Mapping[str, DeployedStack] | None = None
) -> str | None:
    """One line when the deployed stacks belong to another fleet than `fleet`."""
    if stacks is None:
        from dbfleet.ops.rollout import project_dir

        stacks = deployed(project_dir())
    return identity.mismatch(fleet.name, spec, {s.name: s.fleet for s in stacks.values()})


def orphaned(
    fleet: FleetSpec, stacks: Mapping[str, DeployedStack], layers: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Groups with deployed stacks (of `layers`, when given) that the fleet file does
    not have → those stacks, in layer order."""
    out: dict[str, list[str]] = {}
    for s in stacks.values():
        try:
            parsed = parse_stack_name(s.name)
        except StackNameError:
            continue  # made by hand: not a group's
        if layers is not None and parsed.layer not in layers:
            continue
        if s.resources > 0 and parsed.group not in fleet.groups:
            out.setdefault(parsed.group, []).append(s.name)
    for names in out.values():
        names.sort(key=lambda n: LAYERS.index(parse_stack_name(n).layer))
    return dict(sorted(out.items()))


def remove_command(group: str) -> str:
    return f"dbfleet destroy {group} --yes"


def orphan_results(orphans: Mapping[str, list[str]], spec: Path) -> list[StackResult]:
    """One `orphaned` row per deployed stack of the orphaned groups; the group's first
    row says why and how to remove them."""
    rows = []
    for group, stacks in orphans.items():
        for i, stack in enumerate(stacks):
            note = (
                f"group {group} is not in {spec}, but its stacks and processes still run; "
                f"remove them with: {remove_command(group)}"
                if i == 0
                else ""
            )
            rows.append(StackResult(stack, Status.ORPHANED, note=note))
    return rows


def orphan_markdown(orphans: Mapping[str, list[str]], spec: Path) -> str:
    """The report's call-out for orphaned groups ('' when there is none)."""
    if not orphans:
        return ""
    lines = [
        "> [!WARNING]",
        f"> **Orphaned groups** — deployed, but no longer in `{spec}`; their databases keep running:",
    ]
    for group, stacks in orphans.items():
        lines.append(
            f"> - `{group}` ({', '.join(f'`{s}`' for s in stacks)}): remove with "
            f"`{remove_command(group)}`"
        )
    return "\n".join(lines)


def orphan_json(orphans: Mapping[str, list[str]]) -> dict[str, dict[str, Any]]:
    return {g: {"stacks": list(s), "remove": remove_command(g)} for g, s in orphans.items()}
