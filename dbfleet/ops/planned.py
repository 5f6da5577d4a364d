"""Previewing a stack against the planned outputs of the stacks it reads.

A layer reads the layers below it through `StackReference`s, which always see what
is *deployed*. Previewing `replicas-eu` after a region was added to the fleet file
would therefore plan against the old `networks-eu` outputs (and fail: the new
region has no address yet), although `dbfleet up` would apply `networks-eu` first.

`PlannedWorkspace` gives such a preview what `up` would give it: a throw-away copy
of the file backend's stack checkpoints (and of the project's stack config files,
linked to the real project otherwise), in which every upstream stack's outputs are
replaced by the outputs its own preview planned. The real state and the real
project are never written. Values only known after apply keep their deployed
value, or stay unknown (see `changes.merge_planned`).

Only the file backend can be copied; with any other backend `available()` is
false and the CLI says which stacks wait for their upstream to be applied.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pulumi import automation as auto

from dbfleet.ops.backend import BACKEND_ENV, file_backend_dir, stack_config_dir
from dbfleet.ops.changes import STACK_TYPE, merge_planned

# Parts of a file backend that a preview never needs (and that can be large).
SKIPPED_STATE = {"history", "backups", "locks"}


def available() -> bool:
    backend = file_backend_dir()
    return backend is not None and (backend / ".pulumi").is_dir()


class PlannedWorkspace:
    """A scratch project + file backend where upstream stacks carry planned outputs."""

    def __init__(self, project: Path, backend: Path | None = None) -> None:
        backend = backend or file_backend_dir()
        if backend is None:
            raise RuntimeError("planned previews need a file:// backend")
        self.source_project = project
        self._tmp = Path(tempfile.mkdtemp(prefix="dbfleet-plan-"))
        self._tmp.chmod(0o700)  # holds copies of (encrypted) state
        self.project = self._tmp / "project"
        self.backend = self._tmp / "state"
        self._lock = threading.Lock()
        self.patched: dict[str, dict[str, Any]] = {}
        self._link_project(project)
        self._copy_state(backend)

    # -- setting up ----------------------------------------------------------------
    def _link_project(self, project: Path) -> None:
        """Every entry of the project is linked, except Pulumi.yaml and the stack
        config files, which are copied: Pulumi finds the project root by its real
        Pulumi.yaml, and `stack init` in the scratch backend writes a config file."""
        self.project.mkdir()
        config_dir = stack_config_dir(project)
        for entry in project.iterdir():
            if entry.name == "Pulumi.yaml":
                shutil.copy2(entry, self.project / entry.name)
            elif config_dir and entry.name == config_dir.split("/")[0] and entry.is_dir():
                self._mirror(
                    entry, self.project / entry.name, Path(config_dir).relative_to(entry.name)
                )
            elif (
                not config_dir
                and entry.name.startswith("Pulumi.")
                and entry.suffix in (".yaml", ".yml")
            ):
                shutil.copy2(entry, self.project / entry.name)
            else:
                (self.project / entry.name).symlink_to(entry)

    def _mirror(self, src: Path, dst: Path, rest: Path) -> None:
        """Copies the stack config files under `src/rest`, links everything else."""
        dst.mkdir()
        parts = rest.parts
        for entry in src.iterdir():
            if parts and entry.name == parts[0] and entry.is_dir():
                self._mirror(entry, dst / entry.name, Path(*parts[1:]))
            elif (
                not parts and entry.name.startswith("Pulumi.") and entry.suffix in (".yaml", ".yml")
            ):
                shutil.copy2(entry, dst / entry.name)
            else:
                (dst / entry.name).symlink_to(entry)

    def _copy_state(self, backend: Path) -> None:
        src = backend / ".pulumi"
        dst = self.backend / ".pulumi"
        dst.mkdir(parents=True)
        if not src.is_dir():
            return
        for entry in src.iterdir():
            if entry.name in SKIPPED_STATE:
                continue
            if entry.is_dir():
                shutil.copytree(entry, dst / entry.name, symlinks=True)
            else:
                shutil.copy2(entry, dst / entry.name)

    # -- using it ------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return {BACKEND_ENV: f"file://{self.backend}"}

    def workspace(self) -> auto.LocalWorkspace:
        return auto.LocalWorkspace(work_dir=str(self.project), env_vars=self.env)

    def select(self, stack: str) -> auto.Stack:
        """The scratch copy of `stack`, created there when it does not exist yet."""
        opts = auto.LocalWorkspaceOptions(env_vars=self.env)
        return auto.create_or_select_stack(stack_name=stack, work_dir=str(self.project), opts=opts)

    def set_outputs(
        self, stack: str, planned: Mapping[str, Any], project_name: str = "dbfleet"
    ) -> None:
        """Makes `stack` in the scratch backend expose `planned` (merged with what it
        deployed) as its outputs, so that StackReferences to it read the plan."""
        with self._lock:
            st = self.select(stack)
            ws = st.workspace
            state = ws.export_stack(stack)
            deployment = dict(state.deployment or {})
            resources = list(deployment.get("resources") or [])
            root = next((r for r in resources if r.get("type") == STACK_TYPE), None)
            if root is None:
                root = {
                    "urn": f"urn:pulumi:{stack}::{project_name}::{STACK_TYPE}::{project_name}-{stack}",
                    "custom": False,
                    "type": STACK_TYPE,
                }
                resources.insert(0, root)
            root["outputs"] = merge_planned(root.get("outputs") or {}, dict(planned))
            deployment["resources"] = resources
            deployment.setdefault(
                "manifest", {"time": "0001-01-01T00:00:00Z", "magic": "", "version": ""}
            )
            ws.import_stack(
                stack, auto.Deployment(version=state.version or 3, deployment=deployment)
            )
            self.patched[stack] = root["outputs"]

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
