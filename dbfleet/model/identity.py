"""Which fleet a stack belongs to: the identity every stack records in its outputs.

One backend (a clone's `$DBFLEET_HOME/state`) holds the stacks of one fleet. Every
stack exports `fleet: {name, file}` — the fleet file's `name:` and the file it was
deployed from — and every command and every stack refuses to work when the fleet
file in use names another fleet: a stack of fleet `ncfleet` run with the file of
fleet `dbfleet` would otherwise plan to replace `ncfleet-us` by `dbfleet-us`.

The identity is the *name*. The file is recorded to say where the right one is: as
a path relative to the project root when it lies inside the checkout (so a checkout
moved elsewhere, or a CI clone, records the same value), else as an absolute path.

Stacks deployed before the `fleet` output existed are recognised by the fleet name
their outputs already carry: the Vault path `dbfleet/<name>/<group>/postgres`
(accounts and replicas stacks). Their next `up` adds the output (adoption).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbfleet import PROJECT_ROOT

OUTPUT = "fleet"
# How a fleet is renamed: never as a side effect of running another file.
RENAME_HINT = (
    "a fleet is renamed only by destroying it with its own file and bringing it up "
    "under the new name (its data does not move)"
)
MAX_NAMED_STACKS = 4


@dataclass(frozen=True)
class FleetIdentity:
    name: str
    file: str = ""  # as recorded; "" for a stack deployed by an older dbfleet

    def to_output(self) -> dict[str, str]:
        return {"name": self.name, "file": self.file}

    def shown_file(self, root: Path = PROJECT_ROOT) -> str:
        """The recorded file as a path a reader can open (relative ones are under `root`)."""
        if not self.file:
            return ""
        path = Path(self.file)
        return str(path if path.is_absolute() else root / path)


def recorded_file(spec: Path, root: Path = PROJECT_ROOT) -> str:
    """What a stack records of its fleet file: relative to the project root when inside it."""
    resolved = Path(spec).resolve()
    try:
        return str(resolved.relative_to(root.resolve()))
    except ValueError:
        return str(resolved)


def of_fleet(name: str, spec: Path, root: Path = PROJECT_ROOT) -> FleetIdentity:
    return FleetIdentity(name, recorded_file(spec, root))


def from_outputs(outputs: Mapping[str, Any] | None) -> FleetIdentity | None:
    """The fleet a stack's outputs say it belongs to; None when they do not say."""
    outputs = outputs or {}
    value = outputs.get(OUTPUT)
    if isinstance(value, Mapping) and isinstance(value.get("name"), str) and value["name"]:
        return FleetIdentity(value["name"], str(value.get("file") or ""))
    # Deployed by an older dbfleet: its Vault path names the fleet (dbfleet.vault.secret_path).
    path = outputs.get("secret_path")
    if isinstance(path, str):
        parts = path.split("/")
        if len(parts) == 4 and parts[0] == "dbfleet" and parts[3] == "postgres" and parts[1]:
            return FleetIdentity(parts[1])
    return None


def _stack_list(stacks: list[str]) -> str:
    shown = ", ".join(stacks[:MAX_NAMED_STACKS])
    more = len(stacks) - MAX_NAMED_STACKS
    return shown + (f" and {more} more" if more > 0 else "")


def mismatch(
    name: str,
    spec: Path,
    deployed: Mapping[str, FleetIdentity | None],
    root: Path = PROJECT_ROOT,
) -> str | None:
    """One line when a stack of `deployed` (stack → its fleet) belongs to another
    fleet than `name` (the fleet file `spec`); None when every one is this fleet's."""
    others: dict[str, list[str]] = {}
    files: dict[str, str] = {}
    for stack, found in sorted(deployed.items()):
        if found is None or found.name == name:
            continue
        others.setdefault(found.name, []).append(stack)
        files[found.name] = files.get(found.name) or found.shown_file(root)
    if not others:
        return None
    parts = []
    for other, stacks in others.items():
        where = (
            f"fleet file {files[other]}"
            if files[other]
            else "deployed by an older dbfleet, no file recorded"
        )
        parts.append(f"stacks {_stack_list(stacks)} belong to fleet {other!r} ({where})")
    use = next((f for f in files.values() if f), "")
    fix = f"use its file (DBFLEET_SPEC={use})" if use and len(others) == 1 else "use that file"
    return (
        f"refused: the fleet file {Path(spec).resolve()} is fleet {name!r}, but the deployed "
        f"{'; '.join(parts)}: {fix}; {RENAME_HINT}"
    )
