"""Two fleets side by side on one machine (issue 17 items 1, 5 and 12), on the real
engine, Vault, PostgreSQL and HAProxy.

Fleet A and fleet B have their own names, loopback ranges, Vaults and backends, and
the same group name (`us`), as two operators' fleets would. B's backend run with A's
file is refused in one line, and nothing changes; a group removed from B's file is
listed as orphaned until it is destroyed; destroying B leaves every state file of A
byte-identical and A serving; and a fresh clone's setup + up leaves `git status`
clean (stack config files are per clone).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.conftest import REPO, FleetEnv, claim_loopback_octet, make_fleet_env
from tests.integration.vault_fixture import start_local_vault

REGIONS = {"us": ("US", "iad"), "eu": ("EU", "fra")}
LAYERS = ("accounts", "networks", "replicas", "proxies")


def tiny_fleet(name: str, octet: int, groups: tuple[str, ...] = ("us",)) -> str:
    """One region, one node per group: the smallest fleet that serves."""
    lines = [f"name: {name}", "network:", f"  cidr: 127.{octet}.0.0/16", "groups:"]
    for g in groups:
        zone, region = REGIONS[g]
        lines += [f"  {g}:", f"    zone: {zone}", f"    primary: {region}"]
        lines += ["    regions:", f"      {region}: {{nodes: 1}}"]
    return "\n".join(lines) + "\n"


def state_digest(fe: FleetEnv) -> dict[str, str]:
    """Every regular file of the fleet's backend → its sha256."""
    state = fe.home / "state"
    return {
        str(p.relative_to(state)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(state.rglob("*"))
        if p.is_file()
    }


def write_and_read(fe: FleetEnv, group: str = "us") -> None:
    """A row written through the group's write endpoint is read back through its read one."""
    uris = fe.outputs(f"proxies-{group}", show_secrets=True)["connection_uris"]
    region = REGIONS[group][1]
    token = uuid.uuid4().hex
    with psycopg.connect(uris[region]["write"], connect_timeout=5, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS two_fleets (token text)")
        conn.execute("INSERT INTO two_fleets VALUES (%s)", (token,))
    # One region, one node: the read endpoint reads that same node.
    with psycopg.connect(uris[region]["read"], connect_timeout=5, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM two_fleets WHERE token = %s", (token,)).fetchone()


def os_user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def new_fleet(vault, tag: str) -> FleetEnv:
    fe = make_fleet_env(vault, tag)  # a loopback range of its own (claimed)
    fe.write_fleet(tiny_fleet(fe.name, fe.cidr_octet))
    return fe


@pytest.fixture(scope="module")
def fleet_a(local_vault) -> Iterator[FleetEnv]:
    fe = new_fleet(local_vault, "fleet-a")
    fe.run("up", "-q")
    yield fe
    fe.run("destroy", "--yes", "-q", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


@pytest.fixture(scope="module")
def vault_b(tmp_path_factory) -> Iterator:
    lv = start_local_vault(tmp_path_factory.mktemp("vault-b"))
    yield lv
    lv.stop()


@pytest.fixture(scope="module")
def fleet_b(vault_b, fleet_a) -> Iterator[FleetEnv]:
    fe = new_fleet(vault_b, "fleet-b")
    assert fe.name != fleet_a.name
    fe.run("up", "-q")
    yield fe
    fe.write_fleet(tiny_fleet(fe.name, fe.cidr_octet, ("us", "eu")))
    fe.run("destroy", "--yes", "-q", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


def test_another_fleets_file_is_refused_in_one_line_and_nothing_changes(
    fleet_a: FleetEnv, fleet_b: FleetEnv
) -> None:
    before = state_digest(fleet_b)
    wrong = dict(fleet_b.env, DBFLEET_SPEC=str(fleet_a.spec))
    proc = subprocess.run(
        [sys.executable, "-m", "dbfleet", "preview", "--no-policies"],
        env=wrong,
        cwd=fleet_b.project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    # the fleet in the file and the file's path; the fleet the stacks belong to, and its file
    assert f"fleet file {fleet_a.spec.resolve()} is fleet {fleet_a.name!r}" in line
    assert f"belong to fleet {fleet_b.name!r} (fleet file {fleet_b.spec.resolve()})" in line
    assert "renamed only by destroying" in line

    # A plain `pulumi preview` of the stack runs the program, which refuses the same way.
    plain = subprocess.run(
        ["pulumi", "preview", "-s", "accounts-us", "--non-interactive"],
        env=wrong,
        cwd=fleet_b.project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert plain.returncode != 0
    assert f"is fleet {fleet_a.name!r}, but the deployed stacks accounts-us belong to fleet " in (
        plain.stdout + plain.stderr
    )
    assert "account-account" not in plain.stdout  # no replacement planned
    assert state_digest(fleet_b) == before
    if os.geteuid() == 0:
        assert os_user_exists(f"{fleet_b.name}-us")  # not replaced by fleet A's user
    # B's own file still works, and records where it came from.
    outputs = fleet_b.outputs("replicas-us")
    assert outputs["fleet"] == {"name": fleet_b.name, "file": str(fleet_b.spec.resolve())}


def test_a_group_removed_from_the_file_is_orphaned_until_destroyed(fleet_b: FleetEnv) -> None:
    fleet_b.write_fleet(tiny_fleet(fleet_b.name, fleet_b.cidr_octet, ("us", "eu")))
    fleet_b.run("up", "eu", "--layer", "accounts", "-q")
    fleet_b.write_fleet(tiny_fleet(fleet_b.name, fleet_b.cidr_octet, ("us",)))
    md = fleet_b.root / "report.md"
    js = fleet_b.root / "report.json"
    proc = fleet_b.run(
        "preview", "--no-policies", "-q", "--markdown", str(md), "--json", str(js), check=False
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    rows = {ln.split()[0]: ln.split()[1] for ln in proc.stdout.splitlines()[1:] if ln[:1] != " "}
    assert rows["accounts-eu"] == "orphaned", proc.stdout
    assert all(rows[f"{layer}-us"] == "no" for layer in LAYERS), proc.stdout  # "no changes"
    assert "dbfleet destroy eu --yes" in proc.stdout
    doc = json.loads(js.read_text())
    assert doc["exit_code"] == 2 and list(doc["orphaned_groups"]) == ["eu"]
    assert "**Orphaned groups**" in md.read_text()

    # destroy takes the group by name although the file no longer has it
    fleet_b.run("destroy", "eu", "--yes", "-q")
    after = fleet_b.run("preview", "--no-policies", "-q", check=False)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "orphaned" not in after.stdout


def test_destroying_one_fleet_leaves_the_other_untouched_and_serving(
    fleet_a: FleetEnv, fleet_b: FleetEnv
) -> None:
    write_and_read(fleet_a)
    before = state_digest(fleet_a)
    fleet_b.run("destroy", "--yes", "-q")
    assert all(n == 0 for n in _resource_counts(fleet_b).values())
    assert state_digest(fleet_a) == before
    write_and_read(fleet_a)
    if os.geteuid() == 0:
        assert os_user_exists(f"{fleet_a.name}-us")
        assert not os_user_exists(f"{fleet_b.name}-us")


def _resource_counts(fe: FleetEnv) -> dict[str, int]:
    listed = json.loads(fe.pulumi("stack", "ls", "--json").stdout)
    return {s["name"]: int(s.get("resourceCount") or 0) for s in listed}


def test_a_fresh_clone_brought_up_leaves_git_status_clean(local_vault) -> None:
    root = Path(tempfile.mkdtemp(prefix="dbfleet-clone-", dir="/tmp"))
    root.chmod(0o755)  # the group's OS user reaches its data root below
    clone = root / "dbfleet"
    name = f"c{random.randrange(10**6):06d}"
    octet = claim_loopback_octet()
    spec = root / "fleet.yaml"  # outside the clone: the clone's own files stay as cloned
    spec.write_text(tiny_fleet(name, octet))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PULUMI_", "VAULT_", "DBFLEET_", "BAO_"))
        and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(DBFLEET_SPEC=str(spec), **local_vault.env)

    def sh(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["bash", "-c", script],
            env=env,
            cwd=clone,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, f"{script}\n{proc.stdout}\n{proc.stderr}"
        return proc

    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    try:
        sh("bash scripts/setup.sh")
        sh("source scripts/env.sh && dbfleet up -q")
        # plain Pulumi still works by hand in the same shell setup
        sh("source scripts/env.sh && pulumi preview -s proxies-us --non-interactive")
        status = sh("git status --porcelain").stdout
        assert status == "", status
        made = sorted(p.name for p in (clone / "stacks").glob("Pulumi.*.yaml"))
        assert made == [f"Pulumi.{layer}-us.yaml" for layer in sorted(LAYERS)]
    finally:
        subprocess.run(
            ["bash", "-c", "source scripts/env.sh && dbfleet destroy --yes -q"],
            env=env,
            cwd=clone,
            capture_output=True,
            timeout=300,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
