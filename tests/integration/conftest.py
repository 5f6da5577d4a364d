"""Integration fixtures: a private, throw-away dbfleet environment.

Every test session gets its own copy of the Pulumi project, its own state
directory (file backend), passphrase, local Vault, fleet name (so its own OS
users) and loopback range, so tests never touch a fleet the user brought up
with `make up`.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.sandbox import make_sandbox
from tests.fleets import default_fleet_text
from tests.integration.vault_fixture import local_vault  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.integration)


@dataclass
class FleetEnv:
    root: Path
    project: Path
    home: Path
    spec: Path
    name: str
    cidr_octet: int
    env: dict[str, str] = field(repr=False)

    def run(self, *args: str, check: bool = True, timeout: float = 900, input: str | None = None):
        """Runs `dbfleet ARGS` in this environment; returns the CompletedProcess."""
        proc = subprocess.run(
            [sys.executable, "-m", "dbfleet", *args],
            check=False,
            env=self.env,
            cwd=self.project,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"dbfleet {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def pulumi(self, *args: str, check: bool = True, timeout: float = 600):
        proc = subprocess.run(
            ["pulumi", *args, "--non-interactive"],
            check=False,
            env=self.env,
            cwd=self.project,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"pulumi {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def export(self, stack: str) -> str:
        return self.pulumi("stack", "export", "--stack", stack).stdout

    def outputs(self, stack: str, show_secrets: bool = False) -> dict:
        args = ["stack", "output", "--json", "--stack", stack]
        if show_secrets:
            args.append("--show-secrets")
        return json.loads(self.pulumi(*args).stdout)

    def write_fleet(self, text: str) -> None:
        self.spec.write_text(text)


def make_fleet_env(local_vault, tag: str) -> FleetEnv:  # noqa: F811
    # The same isolation as the benchmarks' environments (bench/sandbox.py).
    sandbox = make_sandbox(f"dbfleet-{tag}-", REPO)
    name = f"t{random.randrange(10**6):06d}"
    octet = random.randrange(100, 250)
    sandbox.spec.write_text(default_fleet_text(name, octet))
    env = sandbox.env(
        VAULT_ADDR=local_vault.addr,
        VAULT_TOKEN=local_vault.token,
        PYTHONPATH=str(REPO),
    )
    return FleetEnv(sandbox.root, sandbox.project, sandbox.home, sandbox.spec, name, octet, env)


@pytest.fixture(scope="session")
def fleet_env(local_vault):  # noqa: F811
    fe = make_fleet_env(local_vault, "it")
    yield fe
    # Whatever a test left running is destroyed; the tests assert on it themselves.
    fe.run("destroy", "--yes", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


def wait_for(check: Callable[[], Any], deadline_s: float, what: str, interval: float = 0.2) -> Any:
    """Polls `check` until it returns something truthy; fails after the deadline."""
    t0 = time.monotonic()
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() - t0 > deadline_s:
            raise AssertionError(f"{what}: not within {deadline_s} s")
        time.sleep(interval)  # polling interval, not a synchronisation


def command_lines() -> dict[int, str]:
    """pid -> command line (arguments joined by spaces) of every process that can be
    read right now; processes that exit meanwhile are skipped."""
    found = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                raw = (d / "cmdline").read_bytes()
            except OSError:
                continue
            found[int(d.name)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return found
