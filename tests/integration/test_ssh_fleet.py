"""The default fleet's shape on the ssh target, on a lab of six hosts: real network
namespaces, an sshd per host, the real engine, OpenBao, PostgreSQL, HAProxy and
nftables.

One lab and one fleet for the module (each test starts from whatever is deployed and
leaves it serving, so any one runs alone with `pytest -k`). The lab takes a /24 of
198.18.0.0/15 that no interface uses; nothing is sent anywhere but to the lab's
addresses and loopback. Needs root; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dbfleet import vault
from dbfleet.model.stackname import LAYERS
from dbfleet.ops.lab import Lab, free_lab_network, read_spec
from tests.fleets import lab_fleet_text
from tests.integration.conftest import FleetEnv, make_fleet_env, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)"),
]

GROUPS = ("us", "eu")
STACKS = [f"{layer}-{g}" for g in GROUPS for layer in LAYERS]


class SshFleet:
    def __init__(self, fe: FleetEnv, lab: Lab, net: str) -> None:
        self.fe, self.lab, self.net = fe, lab, net

    def host(self, address: str):
        return next(h for h in self.lab.spec.hosts if h.address == address)

    def on_host(
        self, address: str, *cmd: str, timeout: float = 20, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.lab.exec_argv(address, list(cmd)),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def reaches(self, src: str, dst: str, port: int) -> bool:
        probe = f"exec 3<>/dev/tcp/{dst}/{port}"
        return self.on_host(src, "timeout", "3", "bash", "-c", probe).returncode == 0

    def fresh_run(self, *args: str, check: bool = True):
        """`dbfleet ARGS` with no shared ssh connection left from earlier runs (a new
        control directory), so it meets the hosts as they are now."""
        control = tempfile.mkdtemp(prefix="dbfleet-ctl-")
        try:
            env = dict(self.fe.env, DBFLEET_SSH_CONTROL_DIR=control)
            proc = subprocess.run(
                [sys.executable, "-m", "dbfleet", *args],
                env=env, cwd=self.fe.project, capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
        finally:
            _close_masters(Path(control))
            shutil.rmtree(control, ignore_errors=True)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"dbfleet {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc


def _close_masters(control: Path) -> None:
    for sock in control.glob("*"):
        subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"],
            capture_output=True,
            check=False,
        )


@contextmanager
def lab_fleet(local_vault, tag: str, groups: tuple[str, ...] = ("us", "eu")) -> Iterator[SshFleet]:
    """A fleet of its own on a lab of its own (a free /24), up; destroyed, its ssh
    masters closed and the lab taken down afterwards, whatever happened."""
    fe = make_fleet_env(local_vault, tag)
    net = free_lab_network()
    fe.write_fleet(lab_fleet_text(fe.name, net, groups=groups))
    control = Path(tempfile.mkdtemp(prefix="dbfleet-ctl-"))
    fe.env["DBFLEET_SSH_CONTROL_DIR"] = str(control)
    lab = Lab(read_spec(fe.spec), fe.home)
    try:
        lab.up(fe.env)
        fe.run("up", "-q", timeout=900)
        yield SshFleet(fe, lab, net)
    finally:
        fe.run("destroy", "--yes", "-q", check=False, timeout=900)
        _close_masters(control)
        lab.down(fe.env)
        shutil.rmtree(control, ignore_errors=True)
        shutil.rmtree(fe.root, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet(local_vault) -> Iterator[SshFleet]:
    with lab_fleet(local_vault, "ssh") as ssh_fleet:
        yield ssh_fleet


def test_the_fleet_runs_on_its_hosts_and_a_second_up_changes_nothing(fleet: SshFleet) -> None:
    fe, net = fleet.fe, fleet.net
    regions = fe.outputs("networks-eu")["regions"]
    assert {r: v["host"] for r, v in regions.items()} == {
        "fra": f"{net}.21", "lhr": f"{net}.22", "arn": f"{net}.23",
    }  # fmt: skip
    nodes = fe.outputs("replicas-us")["nodes"]
    assert nodes["iad"]["role"] == "primary" and nodes["ord"]["host"] == f"{net}.12"
    assert fe.outputs("proxies-eu")["write_endpoints"]["lhr"] == f"{net}.22:6433"
    fe.run("prove")
    status = fe.run("status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    # the policy pack passes the ssh fleet as it is (residency, exposure,
    # authentication, stack shape), and nothing changes
    preview = fe.run("preview", "--json", "-", check=False)
    assert preview.returncode == 0, preview.stdout[-3000:] + preview.stderr[-3000:]
    again = fe.run("up", "-q")
    rows = [
        ln.split() for ln in again.stdout.splitlines() if ln.split()[:1] and ln.split()[0] in STACKS
    ]
    assert len(rows) == 8 and all(r[1] == "unchanged" for r in rows), again.stdout
    # the postgres processes really run inside their host's namespace
    listening = fleet.on_host(f"{net}.21", "ss", "-Hltn").stdout
    assert f"{net}.21:5432" in listening and f"{net}.21:6433" in listening


def test_another_group_cannot_reach_a_node_even_from_inside_the_lab(fleet: SshFleet) -> None:
    net = fleet.net
    eu_node = f"{net}.21"
    assert fleet.reaches(f"{net}.22", eu_node, 5432)  # an eu host: admitted
    assert not fleet.reaches(f"{net}.11", eu_node, 5432)  # a us host: dropped by nftables
    assert not fleet.reaches(f"{net}.11", eu_node, 6434)  # nor the stats port
    # and with the right password too: the us host cannot even open the connection
    secrets = vault.read_group_secrets(
        vault.client_from_env(fleet.fe.env),
        vault.DEFAULT_MOUNT,
        vault.secret_path(fleet.fe.name, "eu"),
    )
    # (the password through the environment, never a command line)
    env = dict(os.environ, PGPASSWORD=secrets["superuser_password"], PGCONNECT_TIMEOUT="3")
    psql = fleet.on_host(
        f"{net}.11", "/usr/lib/postgresql/15/bin/psql", "-h", eu_node, "-U", "postgres",
        "-d", "postgres", "-c", "select 1", env=env,
    )  # fmt: skip
    assert psql.returncode != 0


def test_faults_name_the_host_and_change_nothing(fleet: SshFleet) -> None:
    fe, net = fleet.fe, fleet.net
    host = fleet.host(f"{net}.23")
    before = fe.outputs("networks-eu")
    # sshd stopped: unreachable
    pid = fleet.lab.sshd_pid(host)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "sshd to stop")
    proc = fleet.fresh_run("preview", "eu", "--layer", "accounts", "--no-policies", check=False)
    assert proc.returncode == 1 and f"host {net}.23:22: unreachable" in proc.stdout, proc.stdout
    fleet.lab.up(fe.env)  # restarts it
    # a changed host key: the pinned one in Vault no longer matches
    client = vault.client_from_env(fe.env)
    path = f"dbfleet/{fe.name}/ssh"
    login = vault.read_ssh_login(client, vault.DEFAULT_MOUNT, path)
    other = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(fe.root / "other")],
        capture_output=True, check=True,
    )  # fmt: skip
    assert other.returncode == 0
    fake = (fe.root / "other.pub").read_text().split()[:2]
    pins = "".join(
        f"{ln.split()[0]} {' '.join(fake)}\n" if ln.startswith(f"{net}.23 ") else ln + "\n"
        for ln in login["known_hosts"].splitlines()
    )
    client.secrets.kv.v2.create_or_update_secret(
        path=path, mount_point="secret", secret={**login, "known_hosts": pins}
    )
    try:
        proc = fleet.fresh_run("up", "eu", "--layer", "accounts", "-q", check=False)
        assert proc.returncode == 1
        assert (
            f"host {net}.23:22: its host key does not match the one pinned in Vault" in proc.stdout
        )
    finally:
        client.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret=login)
    # the login key removed from the host's authorized_keys
    keys = fleet.lab.authorized_keys(host)
    saved = keys.read_text()
    keys.write_text("")
    try:
        proc = fleet.fresh_run("preview", "eu", "--layer", "accounts", "--no-policies", check=False)
        assert (
            proc.returncode == 1
            and f"host {net}.23:22" in proc.stdout
            and "login key" in proc.stdout
        )
    finally:
        keys.write_text(saved)
    # the key's Vault path missing
    client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point="secret")
    try:
        proc = fleet.fresh_run("preview", "eu", "--layer", "accounts", "--no-policies", check=False)
        assert proc.returncode == 1 and f"secret/{path} does not exist" in proc.stdout + proc.stderr
    finally:
        client.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret=login)
    # nothing was lost or half-changed: the next up converges, the fleet serves
    assert fe.outputs("networks-eu") == before
    fleet.fresh_run("up", "eu", "-q")
    fe.run("prove", "eu")


def test_a_partitioned_replica_is_routed_around_and_catches_up(fleet: SshFleet) -> None:
    fe, net = fleet.fe, fleet.net
    import psycopg

    uris = fe.outputs("proxies-eu", show_secrets=True)["connection_uris"]
    host = fleet.host(f"{net}.22")  # lhr: a replica, and lhr's proxy runs on it too
    subprocess.run(["ip", "link", "set", fleet.lab.veth(host), "down"], check=True)
    try:
        # the other regions' proxies see lhr-0 go down and stop sending reads to it
        def lhr_out_of_the_pool() -> bool:
            doc = json.loads(fe.run("status", "eu", "--json", check=False).stdout)
            backends = [
                b
                for p in doc["groups"][0]["proxies"]
                if p["region"] != "lhr"
                for b in p["backends"]
                if b["server"] == "lhr-0"
            ]
            return bool(backends) and not any(b["up"] for b in backends)

        wait_for(lhr_out_of_the_pool, 30, "the proxies to take lhr-0 out of their pools")
        with psycopg.connect(uris["fra"]["write"], autocommit=True, connect_timeout=5) as c:
            c.execute("CREATE TABLE IF NOT EXISTS partition_t (id int)")
            c.execute("INSERT INTO partition_t VALUES (1)")
        for region in ("fra", "arn"):
            with psycopg.connect(uris[region]["read"], autocommit=True, connect_timeout=5) as c:
                assert c.execute("SELECT count(*) FROM partition_t").fetchone()[0] >= 1
    finally:
        subprocess.run(["ip", "link", "set", fleet.lab.veth(host), "up"], check=True)

    def lhr_caught_up() -> bool:
        try:
            with psycopg.connect(uris["lhr"]["read"], autocommit=True, connect_timeout=3) as c:
                return c.execute("SELECT count(*) FROM partition_t").fetchone()[0] >= 1
        except psycopg.Error:
            return False

    wait_for(lhr_caught_up, 60, "lhr to catch up after the partition")


# A writer run inside a host's namespace: unique keys straight to a node, one line
# "<key> <CLOCK_MONOTONIC>" per acknowledged write, until its deadline.
_INSIDE_WRITER = """
import os, sys, time, psycopg
deadline = time.monotonic() + float(sys.argv[1])
conn, i = None, 0
while time.monotonic() < deadline:
    i += 1
    try:
        if conn is None:
            conn = psycopg.connect(os.environ["URI"], autocommit=True, connect_timeout=1)
        conn.execute("INSERT INTO split_t VALUES (%s)", (f"in-{i}",))
        print(f"in-{i} {time.monotonic()}", flush=True)
    except psycopg.Error:
        conn = None
    time.sleep(0.02)
"""


def test_an_isolated_leader_demotes_itself_and_two_nodes_never_take_writes(
    fleet: SshFleet,
) -> None:
    """The leader's host loses its link: its Patroni can reach no etcd member and
    demotes it, the other regions elect a new leader, and at no instant do two nodes
    acknowledge writes (a writer on each side, unique keys, acknowledgement times)."""
    import psycopg

    fe, net = fleet.fe, fleet.net
    uris = fe.outputs("proxies-eu", show_secrets=True)["connection_uris"]
    fra = f"{net}.21"
    with psycopg.connect(uris["fra"]["write"], autocommit=True, connect_timeout=5) as c:
        c.execute("CREATE TABLE IF NOT EXISTS split_t (k text PRIMARY KEY)")
    direct = uris["fra"]["write"].rsplit("@", 1)[0] + f"@{fra}:5432/app"
    inside = subprocess.Popen(
        fleet.lab.exec_argv(fra, [sys.executable, "-c", _INSIDE_WRITER, "40"]),
        env=dict(os.environ, URI=direct),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    outside: list[tuple[float, str]] = []
    host = fleet.host(fra)
    # The outside writer goes through arn's proxy from this machine (an operator).
    try:
        subprocess.run(["ip", "link", "set", fleet.lab.veth(host), "down"], check=True)
        t_cut = time.monotonic()
        while time.monotonic() < t_cut + 40 and len(outside) < 50:
            try:
                with psycopg.connect(uris["arn"]["write"], autocommit=True, connect_timeout=2) as c:
                    by = c.execute(
                        "INSERT INTO split_t VALUES (%s) RETURNING host(inet_server_addr())",
                        (f"out-{len(outside)}",),
                    ).fetchone()[0]
                    outside.append((time.monotonic(), by))
            except psycopg.Error:
                time.sleep(0.1)  # the outside writer's retry interval
        out, _ = inside.communicate(timeout=60)
    finally:
        subprocess.run(["ip", "link", "set", fleet.lab.veth(host), "up"], check=True)
        if inside.poll() is None:
            inside.kill()
            inside.wait()
    acked_inside = [float(line.split()[1]) for line in out.splitlines() if line.strip()]
    assert acked_inside and outside, (len(acked_inside), len(outside))
    new_leader = outside[0][1]
    assert new_leader != fra, "a write through arn was acknowledged by the isolated node"
    last_inside, first_outside = max(acked_inside), outside[0][0]
    assert last_inside < first_outside, (
        f"two writers: the isolated node acknowledged a write {last_inside - first_outside:.2f} s "
        "after the new leader's first"
    )
    # The old leader rejoins (rewound) and the group switches back to it on the next up.
    fe.run("up", "eu", timeout=900)

    last: list[str] = [""]

    def fra_leads_a_whole_group() -> bool:
        # DEGRADED (exit 3) for as long as a rejoined node catches up
        proc = fe.run("status", "eu", "--json", check=False)
        last[0] = proc.stdout
        doc = json.loads(proc.stdout)["groups"][0]
        return proc.returncode == 0 and doc.get("leader") == "fra-0"

    try:
        wait_for(fra_leads_a_whole_group, 180, "fra-0 to lead a healthy group again")
    except AssertionError as e:
        raise AssertionError(f"{e}; last status: {last[0]}") from None
    print(
        f"measured: isolated leader stopped acknowledging {last_inside - t_cut:.1f} s after the cut; "
        f"the new leader ({new_leader}) acknowledged its first write {first_outside - t_cut:.1f} s "
        f"after it; gap {first_outside - last_inside:.1f} s with no writer on two nodes"
    )


def test_destroy_and_lab_down_leave_nothing_behind(local_vault) -> None:
    """A fleet of its own (one group), so the module's fleet keeps serving."""
    with lab_fleet(local_vault, "sshd", groups=("eu",)) as ssh_fleet:
        fe, lab = ssh_fleet.fe, ssh_fleet.lab
        data_root = Path(f"/var/lib/dbfleet/{fe.name}-eu")
        assert data_root.is_dir()
        fe.run("destroy", "--yes", "-q", timeout=900)
        assert not data_root.exists()
        with pytest.raises(KeyError):
            pwd.getpwnam(f"{fe.name}-eu")
        namespaces = [lab.namespace(h) for h in lab.spec.hosts]
        _close_masters(Path(fe.env["DBFLEET_SSH_CONTROL_DIR"]))
        lab.down(fe.env)
        listed = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False
        ).stdout
        assert not any(ns in listed for ns in namespaces)
        links = subprocess.run(
            ["ip", "-o", "link"], capture_output=True, text=True, check=False
        ).stdout
        assert lab.bridge not in links and not any(lab.veth(h) in links for h in lab.spec.hosts)
