"""etcd.sh run for real (as root, acting as a throw-away OS user) for a group of three
members on loopback addresses: started together they form one cluster; a second run
changes nothing; a killed member is drift that create repairs; a deleted member leaves
the cluster (the other two stay healthy) and comes back by joining it. Clients speak
HTTPS with a certificate from the group's CA (a throw-away one here); etcd refuses
anyone else, on the client port and on the peer port alike. A group whose peers an older
etcd.sh started on plain http moves to https member by member, serving throughout."""

from __future__ import annotations

import http.client
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.hostcmd import DRIFT_EXIT_CODE, SCRIPTS_DIR
from tests.integration.tls_support import Issued, ScratchCa
from tests.integration.vault_fixture import free_ports

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="useradd/runuser need root")

ETCD = Path("/usr/bin/etcd")
ETCDCTL = "/usr/bin/etcdctl"
if not ETCD.exists():
    pytestmark = pytest.mark.skip(reason="no /usr/bin/etcd (package etcd-server)")

GROUP = "eu"
REPO = Path(__file__).resolve().parents[2]
# The last commit whose etcd.sh ran the peers on plain http (clients on TLS), and
# one whose etcd.sh spoke plain http to clients too: groups deployed before peer TLS.
HTTP_PEERS_COMMIT = "68e3322"
PLAIN_CLIENTS_COMMIT = "6af09a0"


@dataclass(frozen=True)
class Member:
    name: str
    host: str
    client_port: int
    peer_port: int

    @property
    def client(self) -> str:
        return f"{self.host}:{self.client_port}"


@dataclass
class Group:
    base: Path
    root: Path
    user: str
    fleet: str
    members: list[Member]
    ca: ScratchCa
    # each member's certificate, and one a client of the group (Patroni) holds
    certs: dict[str, Issued]
    client: Issued
    # Every etcd pid a run recorded: the teardown stops these and only these.
    pids: set[int] = field(default_factory=set)
    # etcd.sh to run (another commit's, for a group deployed before peer TLS), and
    # the peer URL scheme its ETCD_CLUSTER names.
    script: Path = SCRIPTS_DIR / "etcd.sh"
    peer_scheme: str = "https"

    def dir(self, m: Member) -> Path:
        return self.root / f"etcd-{m.name}"

    def env(self, m: Member) -> dict[str, str]:
        """etcd.sh's environment as the EtcdMember component gives it."""
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "RUN_AS": self.user,
            "FLEET_NAME": self.fleet,
            "ETCD_DIR": str(self.dir(m)),
            "MEMBER_NAME": m.name,
            "ETCD_HOST": m.host,
            "ETCD_CLIENT_PORT": str(m.client_port),
            "ETCD_PEER_PORT": str(m.peer_port),
            "ETCD_CLUSTER": ",".join(
                f"{o.name}={self.peer_scheme}://{o.host}:{o.peer_port}" for o in self.members
            ),
            "ETCD_CLIENTS": " ".join(o.client for o in self.members),
            "ETCD_TOKEN": f"{self.fleet}-{GROUP}",
            **self.certs[m.name].environment(self.ca),
        }

    def ctl(self, members: list[Member], *args: str) -> subprocess.CompletedProcess[str]:
        """etcdctl as a client of the group: HTTPS, the group's CA, a certificate from it."""
        return ctl(
            [f"https://{m.client}" for m in members],
            f"--cacert={self.ca.cert}",
            f"--cert={self.client.cert}",
            f"--key={self.client.key}",
            *args,
        )

    def start(self, action: str, m: Member) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["bash", str(self.script), action],
            env=self.env(m),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, m: Member, proc: subprocess.Popen[str]) -> tuple[int, str, str]:
        out, err = proc.communicate(timeout=90)
        self.record_pid(m)
        return proc.returncode, out, err

    def run(self, action: str, m: Member) -> tuple[int, str, str]:
        return self.finish(m, self.start(action, m))

    def ok(self, action: str, m: Member) -> str:
        rc, out, err = self.run(action, m)
        assert rc == 0, err
        assert len(out.splitlines()) == 1, out  # one summary line
        return out

    def check(self, m: Member) -> int:
        return self.run("check", m)[0]

    def pid(self, m: Member) -> int:
        return int((self.dir(m) / "etcd.pid").read_text())

    def record_pid(self, m: Member) -> None:
        pidfile = self.dir(m) / "etcd.pid"
        if pidfile.exists():
            self.pids.add(int(pidfile.read_text()))


def ctl(endpoints: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """etcdctl with no TLS material but what `args` give."""
    return subprocess.run(
        [
            ETCDCTL,
            f"--endpoints={','.join(endpoints)}",
            "--dial-timeout=1s",
            "--command-timeout=3s",
            *args,
        ],
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def eventually(what: str, probe: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def healthy(group: Group, members: list[Member]) -> bool:
    proc = group.ctl(members, "endpoint", "health")
    return proc.returncode == 0


def started_members(group: Group, via: Member) -> dict[str, str]:
    """name -> peer URL of every started member, as `via` lists them."""
    proc = group.ctl([via], "member", "list", "-w", "simple")
    assert proc.returncode == 0, proc.stderr
    listed = {}
    for line in proc.stdout.splitlines():
        _id, status, name, peers, *_ = line.split(", ")
        if status == "started":
            listed[name] = peers
    return listed


def alive_etcd(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe") == str(ETCD)
    except OSError:
        return False


def peer_get(m: Member, ca: Path | None, cert: Issued | None = None) -> int | str:
    """GET /version on m's peer port: over TLS verifying against `ca` (presenting
    `cert` when given), or plain http when `ca` is None. The HTTP status, or why
    the connection failed."""
    conn: http.client.HTTPConnection
    if ca is None:
        conn = http.client.HTTPConnection(m.host, m.peer_port, timeout=3)
    else:
        context = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            context.load_cert_chain(str(cert.cert), str(cert.key))
        conn = http.client.HTTPSConnection(m.host, m.peer_port, timeout=3, context=context)
    try:
        conn.request("GET", "/version")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def refused(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) != 0


@pytest.fixture
def group(request) -> Iterator[Group]:
    names = getattr(request, "param", ("fra", "ams", "waw"))
    tag = os.urandom(3).hex()
    fleet, user = f"et{tag}", f"et{tag}-{GROUP}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--", user],
        check=True,
        capture_output=True,
    )
    base = Path(tempfile.mkdtemp(prefix="dbfleet-etcd-", dir="/tmp"))
    base.chmod(0o755)  # the user must reach its data root
    root = base / f"{fleet}-{GROUP}"
    root.mkdir(mode=0o700)
    shutil.chown(root, user, user)
    first = random.randrange(10, 240)
    members = []
    for i, name in enumerate(names):
        host = f"127.77.250.{first + i}"
        client_port, peer_port = free_ports(2, host)
        members.append(Member(name, host, client_port, peer_port))
    ca = ScratchCa.make(base / "pki", "group")
    certs = {m.name: ca.issue(f"etcd-{m.name}", (m.host,)) for m in members}
    g = Group(base, root, user, fleet, members, ca, certs, ca.issue("patroni"))
    yield g
    # Stop what the runs started, by recorded pid, then remove the dirs and the user.
    for m in members:
        g.record_pid(m)
    for pid in g.pids:
        if alive_etcd(pid):
            os.kill(pid, signal.SIGKILL)
    for pid in g.pids:
        eventually(f"etcd {pid} to die", lambda p=pid: not alive_etcd(p), timeout=10)
    shutil.rmtree(base, ignore_errors=True)
    subprocess.run(["userdel", "--", user], check=False, capture_output=True)


def test_three_members_form_a_group_survive_loss_and_rejoin(group):
    fra, ams, waw = members = group.members

    # A brand-new group: every member starts at once; none finds a cluster to join.
    procs = [(m, group.start("create", m)) for m in members]
    for m, proc in procs:
        rc, out, err = group.finish(m, proc)
        assert rc == 0, err
        assert f"member {m.name} https://{m.client} (pid " in out and ") started in" in out
    eventually("the three members to be healthy", lambda: healthy(group, members))
    assert started_members(group, fra) == {
        m.name: f"https://{m.host}:{m.peer_port}" for m in members
    }
    # Peers speak TLS and admit only certificates from the group's CA: a member's
    # own certificate gets in; none, another CA's, or plain http do not.
    stranger_peer = ScratchCa.make(group.base / "pki", "peer-stranger").issue("etcd-x", (fra.host,))
    assert peer_get(fra, group.ca.cert, group.certs["ams"]) == 200
    for how, answer in (
        ("no certificate", peer_get(fra, group.ca.cert)),
        ("another CA's certificate", peer_get(fra, group.ca.cert, stranger_peer)),
        ("plain http", peer_get(fra, None)),
    ):
        assert answer != 200, f"{how}: {answer}"
    # Only clients with a certificate from the group's CA get in: no certificate, a
    # certificate from another CA, or plain http are refused.
    other = ScratchCa.make(group.base / "pki", "other")
    stranger = other.issue("stranger")
    endpoint = f"https://{fra.client}"
    for refused_client in (
        ctl([endpoint], f"--cacert={group.ca.cert}", "endpoint", "health"),
        ctl(
            [endpoint],
            f"--cacert={group.ca.cert}",
            f"--cert={stranger.cert}",
            f"--key={stranger.key}",
            "endpoint",
            "health",
        ),
        ctl([f"http://{fra.client}"], "endpoint", "health"),
    ):
        assert refused_client.returncode != 0, refused_client.stdout
    # The member's key and the CA are private to the group's user.
    for name in ("server.key", "server.crt", "ca.crt"):  # also the peer TLS files
        f = group.dir(fra) / "tls" / name
        assert f.stat().st_mode & 0o777 == 0o600 and f.stat().st_uid != 0
    # Listening on its own address only: not the wildcard, not 127.0.0.1.
    assert refused("127.0.0.1", fra.client_port) and refused("127.0.0.1", fra.peer_port)
    etcd_dir = group.dir(fra)
    assert etcd_dir.stat().st_mode & 0o777 == 0o700
    assert (
        etcd_dir / ".dbfleet"
    ).read_text() == f"dbfleet managed etcd member\nfleet={group.fleet}\n"
    assert etcd_dir.stat().st_uid == (etcd_dir / "data").stat().st_uid != 0

    # Idempotent: a second run restarts nothing; check sees no drift.
    pids = {m: group.pid(m) for m in members}
    for m in members:
        assert ") unchanged in" in group.ok("update", m)
        assert group.pid(m) == pids[m]
        assert group.check(m) == 0

    # Deleting a member removes it from the cluster first; the other two keep a
    # healthy cluster of two.
    out = group.ok("delete", waw)
    assert "member waw removed from the cluster, deleted" in out
    assert not group.dir(waw).exists() and not alive_etcd(pids[waw])
    assert set(started_members(group, fra)) == {"fra", "ams"}
    assert healthy(group, [fra, ams])
    assert group.check(waw) == DRIFT_EXIT_CODE
    assert "not a member of the cluster" in group.ok("delete", waw)  # idempotent

    # Created again, it joins the existing cluster (member add, state existing).
    assert ") joined in" in group.ok("create", waw)
    eventually("the rejoined group to be healthy", lambda: healthy(group, members))
    eventually(
        "waw to be listed as started",
        lambda: set(started_members(group, ams)) == {"fra", "ams", "waw"},
    )
    assert "--initial-cluster-state=existing" in Path(
        f"/proc/{group.pid(waw)}/cmdline"
    ).read_text().replace("\0", " ")

    # A killed member is drift; create starts it again on its data.
    os.kill(group.pid(ams), signal.SIGKILL)
    eventually("the killed member to die", lambda: not alive_etcd(pids[ams]), timeout=10)
    assert group.check(ams) == DRIFT_EXIT_CODE
    assert ") started in" in group.ok("create", ams)
    assert group.pid(ams) != pids[ams]
    assert group.check(ams) == 0
    eventually("the restarted member to be healthy", lambda: healthy(group, members))
    assert set(started_members(group, waw)) == {"fra", "ams", "waw"}

    # Removed from the cluster while it was down, its data is useless (etcd would
    # refuse to start on it): create wipes it and joins again.
    os.kill(group.pid(ams), signal.SIGKILL)
    eventually("ams to die", lambda: not alive_etcd(group.pid(ams)), timeout=10)
    ams_id = next(
        line.split(", ")[0]
        for line in group.ctl([fra], "member", "list", "-w", "simple").stdout.splitlines()
        if ", ams, " in line
    )
    # If ams led the cluster, the other two elect a leader first: retry until then.
    eventually(
        "the cluster to remove ams",
        lambda: (
            group.ctl([fra, waw], "member", "remove", ams_id).returncode == 0
            or ams_id not in group.ctl([fra], "member", "list", "-w", "simple").stdout
        ),
    )
    assert ") rejoined in" in group.ok("create", ams)
    eventually("the rejoined member to be healthy", lambda: healthy(group, members))
    eventually("ams to be listed again", lambda: "ams" in started_members(group, fra))


@pytest.mark.parametrize("group", [("fra", "ams", "arn", "lhr")], indirect=True)
def test_a_whole_group_deleted_at_once_stops_every_member(group):
    """`destroy` deletes every member of a group at the same time: none may stay
    behind because the others left the cluster under it."""
    members = group.members
    procs = [(m, group.start("create", m)) for m in members]
    for m, proc in procs:
        rc, _out, err = group.finish(m, proc)
        assert rc == 0, err
    eventually("the four members to be healthy", lambda: healthy(group, members))
    pids = {m: group.pid(m) for m in members}
    procs = [(m, group.start("delete", m)) for m in members]
    for m, proc in procs:
        rc, out, err = group.finish(m, proc)
        assert rc == 0, f"{m.name}: {err}"
        assert f"member {m.name} " in out and ", deleted " in out
    for m in members:
        assert not alive_etcd(pids[m]) and not group.dir(m).exists()


def _old_script(group: Group, commit: str) -> Path:
    """etcd.sh and lib.sh as of `commit`, side by side in the test's dir."""
    old = group.base / "old-scripts"
    old.mkdir()
    for name in ("etcd.sh", "lib.sh"):
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{commit}:components/scripts/{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (old / name).write_text(text)
    return old / "etcd.sh"


@pytest.mark.parametrize(
    ("commit", "tls_clients"), [(HTTP_PEERS_COMMIT, True), (PLAIN_CLIENTS_COMMIT, False)]
)
def test_a_group_on_http_peers_moves_to_https_one_member_at_a_time(group, commit, tls_clients):
    """What `dbfleet up` does to a group an older dbfleet deployed: the replicas layer
    runs etcd.sh update for one member after the other."""
    members = group.members
    # Deployed before peer TLS: the old script, http peer URLs.
    new_script = group.script
    group.script, group.peer_scheme = _old_script(group, commit), "http"
    procs = [(m, group.start("create", m)) for m in members]
    for m, proc in procs:
        rc, _out, err = group.finish(m, proc)
        assert rc == 0, err
    if tls_clients:
        eventually("the http-peer group to be healthy", lambda: healthy(group, members))
        assert set(started_members(group, members[0]).values()) == {
            f"http://{m.host}:{m.peer_port}" for m in members
        }
        assert group.ctl(members, "put", "before-tls", "kept").returncode == 0
    else:
        plain = [f"http://{m.client}" for m in members]
        eventually(
            "the plain-http group to be healthy",
            lambda: ctl(plain, "endpoint", "health").returncode == 0,
        )
        assert ctl(plain, "put", "before-tls", "kept").returncode == 0

    # Now the current script. A member still on http peers is drift.
    group.script, group.peer_scheme = new_script, "https"
    for m in members:
        assert group.check(m) == DRIFT_EXIT_CODE

    # Watch the members' processes while they move: never more than one is down.
    down_seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            down = 0
            for m in members:
                try:
                    pid = group.pid(m)
                except (OSError, ValueError):
                    pid = -1
                down += not alive_etcd(pid)
            down_seen.append(down)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for m in members:
            out = group.ok("update", m)
            assert ") restarted (peers moved to https)" in out, out
            assert group.check(m) == 0
            # Back in the cluster before the next member goes: the key written before
            # the move is still readable, through every member.
            got = group.ctl(members, "get", "before-tls", "--print-value-only")
            assert got.returncode == 0 and got.stdout.strip() == "kept", got.stderr
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert down_seen and max(down_seen) <= 1, max(down_seen)

    eventually("the https-peer group to be healthy", lambda: healthy(group, members))
    assert started_members(group, members[0]) == {
        m.name: f"https://{m.host}:{m.peer_port}" for m in members
    }
    for m in members:
        assert peer_get(m, None) != 200  # no plain http peer listener is left
        assert group.check(m) == 0
        assert ") unchanged in" in group.ok("update", m)
