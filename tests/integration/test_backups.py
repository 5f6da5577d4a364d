"""Backups and point-in-time recovery with pgBackRest on the real engine, OpenBao,
PostgreSQL, Patroni, etcd and HAProxy (issue 15).

One group (eu: fra, lhr, arn) is brought up for the module. Every test leaves the group
led by its preferred node, archiving, and writable, so they run in any order and any
one runs alone with `pytest -k`. Each test prints what it measured (`pytest -s`).
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import time
from pathlib import Path

import hvac
import psycopg
import psycopg.conninfo
import pytest
import yaml

from dbfleet import vault
from tests.integration.conftest import default_fleet_text, make_fleet_env, wait_for

GROUP = "eu"


def fleet_text(name: str, octet: int) -> str:
    data = yaml.safe_load(default_fleet_text(name, octet, groups=(GROUP,)))
    data["groups"][GROUP]["backup"] = {"schedule_hours": 24, "full_keep": 2}
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def fleet(local_vault):
    fe = make_fleet_env(local_vault, "backups")
    fe.write_fleet(fleet_text(fe.name, fe.cidr_octet))
    t0 = time.monotonic()
    fe.run("up")
    print(f"\nup of a 3-region group with backups: {time.monotonic() - t0:.1f} s")
    yield fe
    fe.run("destroy", "--yes", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


def facts(fe) -> dict:
    return fe.outputs(f"replicas-{GROUP}")["backup"]


def secrets(fe) -> dict:
    client = hvac.Client(url=fe.env["VAULT_ADDR"], token=fe.env["VAULT_TOKEN"])
    return vault.read_group_secrets(client, vault.DEFAULT_MOUNT, vault.secret_path(fe.name, GROUP))


def pgbackrest(fe, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """pgBackRest as the group's user with the group's configuration."""
    f = facts(fe)
    proc = subprocess.run(
        ["runuser", "-u", f["user"], "--", "env", f"PGPASSFILE={f['dir']}/pgpass",
         "pgbackrest", f"--config={f['dir']}/pgbackrest.conf", f"--stanza={f['stanza']}", *args],
        capture_output=True, text=True, timeout=300, check=False, cwd="/",
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"pgbackrest {' '.join(args)}: {proc.stdout}{proc.stderr}")
    return proc


def info(fe) -> dict:
    return json.loads(pgbackrest(fe, "--output=json", "info").stdout)[0]


def uris(fe) -> dict:
    return fe.outputs(f"proxies-{GROUP}", show_secrets=True)["connection_uris"]


def write_uri(fe, region: str = "fra") -> str:
    return uris(fe)[region]["write"]


def leader(fe) -> str | None:
    import urllib.request

    for node in fe.outputs(f"replicas-{GROUP}")["nodes"].values():
        for m in node["members"]:
            try:
                url = f"http://{m['host']}:{m['rest_port']}/cluster"
                with urllib.request.urlopen(url, timeout=2) as r:
                    doc = json.load(r)
            except OSError:
                continue
            for member in doc.get("members", []):
                if member.get("role") == "leader" and member.get("state") == "running":
                    return member["name"]
            return None
    return None


def superuser_uri(fe, member: str) -> str:
    region, k = member.rsplit("-", 1)
    m = fe.outputs(f"replicas-{GROUP}")["nodes"][region]["members"][int(k)]
    return psycopg.conninfo.make_conninfo(
        host=m["host"], port=m["port"], user="postgres", dbname="app",
        password=secrets(fe)["superuser_password"], connect_timeout=3,
    )  # fmt: skip


def status(fe) -> tuple[int, dict]:
    proc = fe.run("status", GROUP, "--json", check=False)
    return proc.returncode, json.loads(proc.stdout)["groups"][0]


def test_archiving_works_from_the_first_up_and_the_repository_is_private(fleet):
    f = facts(fleet)
    assert f["stanza"] == f"{fleet.name}-{GROUP}"
    check = pgbackrest(fleet, "check")
    assert check.returncode == 0
    repo = Path(f["dir"])
    assert stat.S_IMODE(repo.stat().st_mode) == 0o700
    assert repo.owner() == f["user"]
    conf = repo / "pgbackrest.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert "repo1-cipher-type=aes-256-cbc" in conf.read_text()
    # The scheduler takes the first backup by itself, without anyone asking.
    t0 = time.monotonic()
    wait_for(lambda: info(fleet).get("backup"), 180, "the scheduler's first backup")
    print(f"first scheduled backup visible {time.monotonic() - t0:.1f} s after the check")
    code, doc = status(fleet)
    assert code == 0, doc
    assert doc["backup"]["last_full"], doc["backup"]
