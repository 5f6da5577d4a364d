"""High availability on Patroni and etcd, on the real engine, OpenBao, PostgreSQL,
Patroni, etcd and HAProxy (issue 13).

One group (eu: fra, lhr, arn) is brought up for the module. Every test starts from
whatever the group runs and leaves it led by its preferred node again (most end
with `dbfleet up eu`, which switches back), so they run in any order and any one
runs alone with `pytest -k`. Each test prints what it measured (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.integration.conftest import command_lines, default_fleet_text, make_fleet_env

GROUP = "eu"
REGIONS = ("fra", "lhr", "arn")
# Small enough that a paused replica leaves the read pool after a few MB of writes.
LAG_BUDGET = "2MB"


def wait_until(condition, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # polling interval, not a synchronisation


def fleet_text(name: str, octet: int, **group: object) -> str:
    data = yaml.safe_load(default_fleet_text(name, octet, groups=(GROUP,)))
    data["groups"][GROUP].update({"read_lag_budget": LAG_BUDGET, **group})
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def fleet(local_vault):
    fe = make_fleet_env(local_vault, "ha")
    fe.write_fleet(fleet_text(fe.name, fe.cidr_octet))
    fe.run("up")
    yield fe
    fe.run("destroy", "--yes", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


def set_group(fe, **group: object) -> None:
    fe.write_fleet(fleet_text(fe.name, fe.cidr_octet, **group))


def uris(fe) -> dict:
    return fe.outputs(f"proxies-{GROUP}", show_secrets=True)["connection_uris"]


def members(fe) -> dict[str, dict]:
    """member name -> {host, port, rest_port} from the replicas stack."""
    out = {}
    for region, node in fe.outputs(f"replicas-{GROUP}")["nodes"].items():
        for k, m in enumerate(node["members"]):
            out[f"{region}-{k}"] = m
    return out


def cluster(fe) -> dict:
    """Patroni's /cluster, from the first member that answers."""
    for m in members(fe).values():
        try:
            with urllib.request.urlopen(
                f"http://{m['host']}:{m['rest_port']}/cluster", timeout=2
            ) as r:
                return json.load(r)
        except OSError:
            continue
    return {}


def leader(fe) -> str | None:
    for m in cluster(fe).get("members", []):
        if m.get("role") == "leader" and m.get("state") == "running":
            return m["name"]
    return None


def node_dir(fe, member: str) -> Path:
    return fe.home / "data" / f"{fe.name}-{GROUP}" / member


def patroni_pid(fe, member: str) -> int:
    return int((node_dir(fe, member) / "run" / "patroni.pid").read_text().split()[0])


def postmaster_pid(fe, member: str) -> int:
    return int((node_dir(fe, member) / "pgdata" / "postmaster.pid").read_text().split()[0])


def direct_uri(fe, member: str, user_uri: str) -> str:
    m = members(fe)[member]
    return user_uri.rsplit("@", 1)[0] + f"@{m['host']}:{m['port']}/app?connect_timeout=3"


def restore(fe) -> None:
    """The group as declared: every process running, led by the preferred node."""
    set_group(fe)
    fe.run("up", GROUP)
    assert leader(fe) == "fra-0"


class Writer:
    """A steady write load through one endpoint: unique keys, acknowledged ids with
    the monotonic time of their acknowledgement, and every error's SQLSTATE."""

    def __init__(self, uri: str, table: str, tag: str, period_s: float = 0.02):
        self.uri, self.table, self.tag, self.period_s = uri, table, tag, period_s
        self.acked: list[tuple[str, float]] = []
        self.errors: list[tuple[float, str | None, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self):
        i, conn = 0, None
        while not self._stop.is_set():
            i += 1
            key = f"{self.tag}-{i}"
            try:
                if conn is None:
                    conn = psycopg.connect(self.uri, autocommit=True, connect_timeout=2)
                conn.execute(f"INSERT INTO {self.table} (k) VALUES (%s)", (key,))
                self.acked.append((key, time.monotonic()))
            except psycopg.Error as exc:
                self.errors.append((time.monotonic(), exc.sqlstate, str(exc).strip()[:200]))
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg.Error:
                        pass
                conn = None
            self._stop.wait(self.period_s)

    def read_only_errors(self) -> list[str]:
        """Writes that reached a read-only node (SQLSTATE 25006)."""
        return [e[2] for e in self.errors if e[1] == "25006"]

    def first_ack_after(self, t: float) -> float | None:
        return next((at for _, at in self.acked if at > t), None)


def make_table(uri: str, table: str) -> None:
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute(f"CREATE TABLE IF NOT EXISTS {table} (k text PRIMARY KEY)")


def present(uri: str, table: str) -> set[str]:
    with psycopg.connect(uri, autocommit=True) as c:
        return {r[0] for r in c.execute(f"SELECT k FROM {table}")}


# ---------------------------------------------------------------------------------------
def test_the_group_runs_on_patroni_and_etcd_and_status_shows_them(fleet):
    view = cluster(fleet)
    states = {m["name"]: (m["role"], m["state"]) for m in view["members"]}
    assert states == {
        "fra-0": ("leader", "running"),
        "lhr-0": ("replica", "running"),
        "arn-0": ("replica", "running"),
    }, states
    fleet.run("prove")
    proc = fleet.run("status", "--json")
    doc = json.loads(proc.stdout)
    text = json.dumps(doc)
    assert "fra-0" in text and "etcd" in text, text[:500]
    # Patroni's configuration holds the group's passwords: private to the group's user.
    conf = node_dir(fleet, "fra-0") / "patroni.yml"
    assert conf.stat().st_mode & 0o077 == 0
    # No password on any process's command line (Patroni, etcd, postgres).
    secrets = fleet.outputs(f"proxies-{GROUP}", show_secrets=True)["connection_uris"]
    password = secrets["fra"]["write"].split(":")[2].split("@")[0]
    assert not [c for c in command_lines().values() if password in c]
