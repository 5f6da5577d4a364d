"""A data root that runs out of space: the rollout fails with the cause named, and
the next `up` completes once space is back, with no data lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import hvac
import psycopg
import pytest

from dbfleet import vault
from tests.fleets import default_fleet_text
from tests.integration.conftest import make_fleet_env, wait_for


@pytest.fixture
def small_disk_fleet(local_vault):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the data root needs root")
    # Roomy: a group of three regions takes about 600 MB here (each etcd member
    # preallocates 64 MB of WAL); the test fills what is left itself.
    fe = make_fleet_env(local_vault, "disk")
    fe.write_fleet(default_fleet_text(fe.name, fe.cidr_octet, groups=("eu",)))
    data = fe.home / "data"
    data.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1500m,mode=0755", "tmpfs", str(data)], check=True
    )
    try:
        yield fe, data
    finally:
        fe.run("destroy", "--yes", check=False)
        # A failed destroy can leave a process on the mount for a moment: retry, and
        # detach it lazily rather than leave it mounted.
        deadline = time.monotonic() + 10
        while subprocess.run(["umount", str(data)], check=False).returncode != 0:
            if time.monotonic() > deadline:
                subprocess.run(["umount", "-l", str(data)], check=False)
                break
            time.sleep(0.5)  # retry interval
        shutil.rmtree(fe.root, ignore_errors=True)


def _fill(data: Path, leave_bytes: int) -> Path:
    """A root-owned file that leaves `leave_bytes` free on the data root's file system."""
    filler = data / "filler"
    chunk = b"\0" * 2**20
    with open(filler, "wb") as f:
        while shutil.disk_usage(data).free - len(chunk) >= leave_bytes:
            f.write(chunk)
            f.flush()
    return filler


def _has_full_backup(fe):
    def done() -> bool:
        proc = fe.run("status", "eu", "--json", check=False)
        try:
            return bool(json.loads(proc.stdout)["groups"][0]["backup"]["last_full"])
        except (ValueError, KeyError, IndexError, TypeError):
            return False

    return done


def test_a_full_data_root_fails_clearly_and_the_next_up_completes(small_disk_fleet):
    fe, data = small_disk_fleet
    fe.run("up")
    # A new group's scheduler takes its first full backup right away, into the
    # repository on this same data root: filling the disk under it would starve the
    # leader's WAL too (a different fault from the one this test is about).
    wait_for(_has_full_backup(fe), 180, "the scheduler's first full backup")
    # The data root fills up; then a region is added (its etcd member preallocates 64 MiB,
    # its node copies the leader's 100+ MiB). What is left is what the group's own leader
    # needs to go on: with archiving on, a WAL segment is recycled only once archived,
    # and a leader that cannot create its next 16 MiB segment stops (PostgreSQL cannot
    # run on a full disk at all; the fault here is the new region's, not the leader's).
    filler = _fill(data, 40 * 2**20)
    text = default_fleet_text(fe.name, fe.cidr_octet, groups=("eu",))
    fe.write_fleet(
        text.replace("      arn: {nodes: 1}\n", "      arn: {nodes: 1}\n      ams: {nodes: 1}\n")
    )
    first = fe.run("up", check=False)
    out = first.stdout + first.stderr
    assert first.returncode == 1, out
    said = out.lower()  # PostgreSQL says "No space left…", etcd "no space left…"
    assert (
        "no space left on device" in said or "could not write" in said or "not enough space" in said
    ), out
    failed = [ln for ln in first.stdout.splitlines() if ln.startswith("replicas-eu")]
    assert failed and "failed" in failed[0], first.stdout

    # The group keeps what is written to it meanwhile.
    client = hvac.Client(url=fe.env["VAULT_ADDR"], token=fe.env["VAULT_TOKEN"])
    su = vault.read_group_secrets(client, vault.DEFAULT_MOUNT, vault.secret_path(fe.name, "eu"))[
        "superuser_password"
    ]
    write = fe.outputs("proxies-eu", show_secrets=True)["connection_uris"]["fra"]["write"]
    with psycopg.connect(write, autocommit=True, connect_timeout=3) as c:
        c.execute("CREATE TABLE kept (id int)")
        c.execute("INSERT INTO kept SELECT generate_series(1, 100)")

    # Space comes back; the next up completes the group, and nothing was lost.
    filler.unlink()
    fe.run("up")
    fe.run("prove", "eu")
    ams = fe.outputs("networks-eu")["regions"]["ams"]
    direct = {
        "host": ams["host"], "port": ams["postgres_port"], "user": "postgres", "password": su,
        "dbname": "app", "autocommit": True, "connect_timeout": 3,
    }  # fmt: skip
    with psycopg.connect(**direct) as c:
        assert c.execute("SELECT count(*) FROM kept").fetchone()[0] == 100
    again = fe.run("up")
    assert all(
        "unchanged" in ln
        for ln in again.stdout.splitlines()
        if ln.startswith(("accounts-", "networks-", "replicas-", "proxies-"))
    ), again.stdout
    print(
        "measured: a full data root: adding ams failed naming the full disk, the group kept "
        "serving writes; with space back, the next up completed and the group proved sound"
    )
