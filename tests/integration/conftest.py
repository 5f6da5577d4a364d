"""Integration fixtures: a private, throw-away dbfleet environment.

Every test session gets its own copy of the Pulumi project, its own state
directory (file backend), passphrase, local Vault, fleet name (so its own OS
users) and loopback range, so tests never touch a fleet the user brought up
with `make up`.

Worker-safe: `scripts/test.sh` runs modules in parallel (pytest-xdist, see
tests/conftest.py), each worker a process with its own session fixtures (its own
local Vault on ports the kernel hands out). What workers could still both pick - a
fleet's 127.<octet>.0.0/16 - is claimed machine-wide by `claim_loopback_octet`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.sandbox import make_sandbox
from dbfleet.ops.lab import claim
from tests.fleets import default_fleet_text
from tests.integration.vault_fixture import local_vault  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parents[2]


HERE = Path(__file__).resolve().parent
# The loopback /16s fleets of the tests take: 127.<octet>.0.0/16.
FLEET_OCTETS = range(100, 250)
CLAIM_DIR = Path(tempfile.gettempdir()) / f"dbfleet-test-claims-{os.getuid()}"
# claim name -> the open lock file holding it, for this process's lifetime
_claims: dict[str, int] = {}


def pytest_collection_modifyitems(items):
    # Called with every item of the session (unit ones too when `pytest tests` runs).
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


def _claim(name: str) -> bool:
    """Takes the machine-wide claim `name` for this test worker (dbfleet.ops.lab.claim:
    a flock the kernel releases when the worker exits, even by a crash)."""
    return claim(CLAIM_DIR, name, _claims)


def _listening_octets() -> set[int]:
    """Second octets of the 127.x addresses something on this machine listens on
    (a fleet a crashed run left behind holds its range too)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/udp"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local = line.split()[1].split(":")[0]  # little-endian hex, 0100007F = 127.0.0.1
            if local.endswith("7F"):
                found.add(int(local[4:6], 16))
    return found


def claim_loopback_octet() -> int:
    """A loopback /16 (127.<octet>.0.0/16) for one fleet that no other test process on
    this machine has claimed and nothing listens in: parallel workers each bring fleets
    up on fixed ports of their range, so two on one range would take each other's
    ports. Held until this process exits (a worker never reuses one either)."""
    busy = _listening_octets()
    for octet in random.sample(FLEET_OCTETS, len(FLEET_OCTETS)):
        if octet not in busy and _claim(f"loopback-127.{octet}"):
            return octet
    raise AssertionError(f"every loopback range 127.{FLEET_OCTETS[0]}-{FLEET_OCTETS[-1]} is taken")


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
    octet = claim_loopback_octet()
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


@pytest.fixture(scope="session")
def default_fleet(local_vault) -> Iterator[tuple[FleetEnv, subprocess.CompletedProcess]]:  # noqa: F811
    """The default fleet (both groups) brought up once per worker by `dbfleet up`, for the
    modules that share it (tests/conftest.py SHARED keeps them on one worker, in order):
    the fleet and that first `up`'s result (a failed `up` fails every test that asks for
    it, with its output). Destroyed when the session ends, unless test_fleet.py's last
    test has destroyed it already."""
    fe = make_fleet_env(local_vault, "default")
    try:
        first_up = fe.run("up")
        yield fe, first_up
    finally:
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


def drill_ids(uri: str) -> list[int] | None:
    """The ids in the restore drill's table `drill` at `uri`, in order; None while the
    node does not answer or holds none (yet)."""
    import psycopg

    try:
        with psycopg.connect(uri, autocommit=True, connect_timeout=3) as c:
            return [r[0] for r in c.execute("SELECT id FROM drill ORDER BY id")] or None
    except psycopg.Error:
        return None


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
