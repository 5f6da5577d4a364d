"""The baseline every figure is divided by: an empty Pulumi Python program.

A project whose `__main__.py` is only `import pulumi`, on the same backend, the same
passphrase secrets provider, the same Pulumi CLI, language host and virtualenv as
dbfleet. `EmptyFleet` runs it in dbfleet's shape — the groups in parallel, four
stacks one after the other in each — so `dbfleet up`/`preview` can be compared with
what the engine alone costs for the same number of stacks.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from bench.fleetenv import FleetEnv
from dbfleet.model.stackname import LAYERS


class EmptyFleet:
    def __init__(
        self, fe: FleetEnv, groups: tuple[str, ...] = ("us", "eu"), prefix: str = ""
    ) -> None:
        self.fe = fe
        self.groups = groups
        self.prefix = prefix
        self.project = fe.empty_project()
        self.created: set[str] = set()

    def stacks(self, group: str) -> list[str]:
        """dbfleet's stacks of one group, in the order `dbfleet up` applies them."""
        return [f"{self.prefix}{layer}-{group}" for layer in LAYERS]

    def _each_group(self, work) -> float:
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(self.groups)) as pool:
            for f in [pool.submit(work, g) for g in self.groups]:
                f.result()
        return time.monotonic() - t0

    def up(self) -> float:
        """Creates and applies every stack (from nothing); wall seconds."""

        def group(g: str) -> None:
            for s in self.stacks(g):
                self.fe.pulumi("stack", "init", s, cwd=self.project)
                self.created.add(s)
                self.fe.pulumi("up", "--yes", "--skip-preview", "-s", s, cwd=self.project)

        return self._each_group(group)

    def preview(self) -> float:
        """A no-change preview of every stack; wall seconds."""

        def group(g: str) -> None:
            for s in self.stacks(g):
                self.fe.pulumi("preview", "-s", s, cwd=self.project)

        return self._each_group(group)

    def remove(self) -> None:
        for s in sorted(self.created):
            self.fe.pulumi(
                "stack", "rm", "--yes", "--force", "-s", s, cwd=self.project, ok_codes=None
            )
        self.created.clear()


def ensure_floor_stack(fe: FleetEnv, name: str = "floor") -> str:
    """One applied empty stack, for single-stack comparisons."""
    project = fe.empty_project()
    if not (fe.home / "state" / ".pulumi" / "stacks" / "benchempty" / f"{name}.json").exists():
        fe.pulumi("stack", "init", name, cwd=project, ok_codes=None)
        fe.pulumi("up", "--yes", "--skip-preview", "-s", name, cwd=project)
    return name


def preview_floor(fe: FleetEnv, name: str = "floor", **kw):
    return fe.pulumi("preview", "-s", name, cwd=fe.empty_project(), **kw)
