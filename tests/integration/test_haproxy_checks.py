"""A region's HAProxy (haproxy.sh, real haproxy) routing on Patroni's REST API.

The check endpoints are tiny HTTPS servers started here that answer 200 or 503 per
path as the test says, standing in for Patroni's REST API in this component test
only (the fleet tests run real Patroni); their certificates come from a throw-away
CA standing in for the group's (tests/integration/tls_support.py). The "nodes" are TCP listeners that greet
every connection with their name, so a client sees where HAProxy sent it.
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import os
import random
import signal
import socket
import socketserver
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.hostcmd import SCRIPTS_DIR
from tests.integration.tls_support import ScratchCa, b64

LAG_BYTES = 16 * 1024 * 1024
# Writes inter 1s, fall 1: a flip shows within one interval plus the check's own
# time; reads inter 2s, fall 2: within two intervals plus. The margins keep a loaded
# 2-core machine from failing the test.
WRITE_FLIP_S = 2.5
READ_FLIP_S = 6.0


class _Greeter(socketserver.BaseRequestHandler):
    """Says the node's name, then holds the connection until the peer closes it."""

    server: _NodeServer

    def handle(self) -> None:
        srv = self.server
        with srv.lock:
            srv.open_now += 1
            srv.accepted += 1
        try:
            self.request.sendall(srv.name.encode() + b"\n")
            while self.request.recv(1024):
                pass
        except OSError:
            pass
        finally:
            with srv.lock:
                srv.open_now -= 1


class _NodeServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.open_now = 0
        self.accepted = 0
        super().__init__(address, _Greeter)


class _RestHandler(http.server.BaseHTTPRequestHandler):
    """Answers GET <path> with the status the test set for that path (503 if none)."""

    server: _RestServer

    def do_GET(self) -> None:  # the name http.server calls
        url = urllib.parse.urlsplit(self.path)
        self.server.seen.append(self.path)
        code = self.server.statuses.get(url.path, 503)
        # As Patroni: the JSON body names the role PostgreSQL runs in.
        body = json.dumps({"state": "running", "role": self.server.role}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per check per second is noise


class _RestServer(http.server.ThreadingHTTPServer):
    """HTTPS only, as Patroni with `restapi.certfile`: `context` holds the node's
    certificate (swappable: new connections use the current one)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        self.statuses: dict[str, int] = {}
        self.role = "replica"
        self.seen: list[str] = []
        self.context = context
        super().__init__(address, _RestHandler)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True), addr

    def use_certificate(self, context: ssl.SSLContext) -> None:
        self.context = context


@dataclass
class Node:
    name: str
    pg: _NodeServer
    rest: _RestServer
    # its certificate from the group's CA, and one from another CA (an impostor's)
    context: ssl.SSLContext = field(repr=False)
    rogue: ssl.SSLContext = field(repr=False)

    @property
    def host(self) -> str:
        return self.pg.server_address[0]

    @property
    def env(self) -> str:
        return f"{self.host}:{self.pg.server_address[1]}:{self.rest.server_address[1]}"

    def answer(self, primary: int, read_only: int, role: str | None = None) -> None:
        """What this node's stand-in Patroni answers from now on: the statuses, and
        the role in the body (by default: master exactly when /primary is 200)."""
        self.rest.statuses.update({"/primary": primary, "/read-only": read_only})
        self.rest.role = role or ("master" if primary == 200 else "replica")


@dataclass
class Proxy:
    host: str
    write_port: int
    read_port: int
    stats_port: int
    env: dict[str, str] = field(repr=False)
    pids: list[int] = field(default_factory=list)

    def connect(self, port: int) -> socket.socket:
        return socket.create_connection((self.host, port), timeout=5)

    def who(self, port: int) -> str:
        """The name of the node a new connection reaches ("" when HAProxy closes it)."""
        with self.connect(port) as s:
            return greeting(s)

    def stat(self, listener: str, server_prefix: str, column: str) -> str:
        with urllib.request.urlopen(f"http://{self.host}:{self.stats_port}/;csv", timeout=5) as r:
            text = r.read().decode().lstrip("# ")
        for row in csv.DictReader(io.StringIO(text)):
            if row["pxname"] == listener and row["svname"].startswith(server_prefix):
                return row[column]
        raise AssertionError(f"no {listener}/{server_prefix}* row in\n{text}")


def greeting(s: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(64)
        if not chunk:
            return ""
        data += chunk
    return data.decode().strip()


def wait_until(what: str, predicate: Callable[[], bool], timeout_s: float = 10) -> float:
    """Polls `predicate` until it holds; returns the seconds that took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)  # pacing between polls, not synchronisation
    return time.monotonic() - start


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def haproxy_sh(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS_DIR / "haproxy.sh"), action],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _server_context(ca: ScratchCa, name: str, host: str) -> ssl.SSLContext:
    issued = ca.issue(name, (host,))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(issued.cert, issued.key)
    return ctx


def haproxy_pids(cfg: Path) -> list[int]:
    """Running haproxy processes of this configuration file, by their command line."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"haproxy") and str(cfg).encode() in args:
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Proxy, dict[str, Node]]]:
    """Three nodes - `local` in the proxy's region, `near` and `far` in others - and a
    region proxy over them (SERVER_MAXCONN 2), on a loopback /24 of their own."""
    if os.geteuid() != 0:
        pytest.skip("haproxy.sh acts as RUN_AS; this test runs it as root")
    net = f"127.{random.randint(180, 199)}.{random.randint(0, 255)}"
    ca, other = ScratchCa.make(tmp_path / "pki", "group"), ScratchCa.make(tmp_path / "pki", "other")
    nodes: dict[str, Node] = {}
    for i, name in enumerate(("local", "near", "far"), start=2):
        host = f"{net}.{i}"
        ctx, rogue = (_server_context(c, f"{c.name}-{name}", host) for c in (ca, other))
        node = Node(name, _NodeServer((host, 0), name), _RestServer((host, 0), ctx), ctx, rogue)
        node.answer(primary=503, read_only=200)
        nodes[name] = node
    nodes["near"].answer(primary=200, read_only=200)  # the group's leader
    threads = [
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        for n in nodes.values()
        for srv in (n.pg, n.rest)
    ]
    for t in threads:
        t.start()
    host = f"{net}.1"
    ports = set()
    while len(ports) < 3:
        ports.add(free_port(host))
    write_port, read_port, stats_port = sorted(ports)
    env = {
        "RUN_AS": "root",
        "PROXY_DIR": str(tmp_path / "proxy-lhr"),
        "PROXY_HOST": host,
        "WRITE_PORT": str(write_port),
        "READ_PORT": str(read_port),
        "STATS_PORT": str(stats_port),
        # the declared primary region first, as the proxies layer orders them
        "WRITE_SERVERS": " ".join(nodes[n].env for n in ("near", "local", "far")),
        "READ_LOCAL": nodes["local"].env,
        "READ_BACKUPS": f"{nodes['near'].env} {nodes['far'].env}",
        "READ_LAG_BYTES": str(LAG_BYTES),
        "SERVER_MAXCONN": "2",
        "QUEUE_TIMEOUT_S": "10",
        "TLS_CA": b64(ca.cert.read_text()),
    }
    proxy = Proxy(host, write_port, read_port, stats_port, env)
    cfg = tmp_path / "proxy-lhr" / "haproxy.cfg"
    try:
        proc = haproxy_sh("create", env)
        assert proc.returncode == 0, proc.stderr
        proxy.pids = haproxy_pids(cfg)
        assert proxy.pids, "haproxy.sh create left no haproxy running"
        yield proxy, nodes
    finally:
        proc = haproxy_sh("delete", {"RUN_AS": "root", "PROXY_DIR": env["PROXY_DIR"]})
        for pid in proxy.pids + haproxy_pids(cfg):  # in case delete failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for n in nodes.values():
            for srv in (n.pg, n.rest):
                srv.shutdown()
                srv.server_close()
        assert proc.returncode == 0, proc.stderr


def test_writes_go_only_to_the_node_patroni_calls_primary_and_follow_a_flip(rig):
    proxy, nodes = rig
    # Straight after the start, before any check ran: no write reaches a replica
    # (HAProxy would start every server UP; haproxy.sh starts write servers DOWN).
    assert {proxy.who(proxy.write_port) for _ in range(10)} <= {"", "near"}
    wait_until("writes reach the leader", lambda: proxy.who(proxy.write_port) == "near")
    # Settled: every new connection goes to the leader, none to a replica.
    assert {proxy.who(proxy.write_port) for _ in range(10)} == {"near"}
    held = proxy.connect(proxy.write_port)
    assert greeting(held) == "near"

    # A switchover: near is demoted, local becomes the leader.
    nodes["near"].answer(primary=503, read_only=200)
    nodes["local"].answer(primary=200, read_only=200)
    took = wait_until(
        "writes leave the demoted node", lambda: proxy.who(proxy.write_port) == "local"
    )
    assert took < WRITE_FLIP_S
    # The demoted node's session was cut (a connection error clients retry), not
    # left open to a node that would now refuse writes.
    held.settimeout(WRITE_FLIP_S)
    assert held.recv(64) == b""
    held.close()
    assert {proxy.who(proxy.write_port) for _ in range(10)} == {"local"}
    # The checks asked the node's REST port: /primary for writes (the read listener's
    # /read-only?lag= every 2 s, which may not have come yet), nothing else.
    seen = set(nodes["far"].rest.seen)
    assert "/primary" in seen and seen <= {"/primary", f"/read-only?lag={LAG_BYTES}"}

    # No leader at all (mid-failover): writes are refused, never sent to a replica.
    nodes["local"].answer(primary=503, read_only=200)
    wait_until("writes are refused", lambda: proxy.who(proxy.write_port) == "", WRITE_FLIP_S)
    # A new leader whose PostgreSQL is still being promoted: Patroni already answers
    # /primary with 200 (it holds the lock), its PostgreSQL is still read-only. No
    # write may reach it until the role says primary.
    nodes["far"].answer(primary=200, read_only=200, role="replica")
    deadline = time.monotonic() + 3 * WRITE_FLIP_S
    while time.monotonic() < deadline:
        assert proxy.who(proxy.write_port) == "", "a write reached a node still in recovery"
        time.sleep(0.1)  # sampling interval while nothing may change
    nodes["far"].answer(primary=200, read_only=200)
    wait_until("writes reach the promoted leader", lambda: proxy.who(proxy.write_port) == "far")


def test_reads_prefer_the_local_node_and_fall_back_nearest_first_while_it_lags(rig):
    proxy, nodes = rig
    # Checked with Patroni's lag-aware endpoint, the budget in bytes.
    wait_until(
        "the local node's first check",
        lambda: f"/read-only?lag={LAG_BYTES}" in nodes["local"].rest.seen,
    )
    wait_until("reads stay local", lambda: proxy.who(proxy.read_port) == "local")
    assert {proxy.who(proxy.read_port) for _ in range(10)} == {"local"}

    # The local replica falls behind the budget: reads move to the nearest region.
    nodes["local"].answer(primary=503, read_only=503)
    took = wait_until("reads move to near", lambda: proxy.who(proxy.read_port) == "near")
    assert took < READ_FLIP_S
    assert {proxy.who(proxy.read_port) for _ in range(10)} == {"near"}  # no allbackups

    # The nearest one too: the next in order.
    nodes["near"].answer(primary=200, read_only=503)
    wait_until("reads move to far", lambda: proxy.who(proxy.read_port) == "far", READ_FLIP_S)

    # Caught up again: back home.
    nodes["local"].answer(primary=503, read_only=200)
    took = wait_until("reads come back", lambda: proxy.who(proxy.read_port) == "local")
    assert took < READ_FLIP_S


def test_a_node_at_its_maxconn_queues_the_next_client_instead_of_forwarding_it(rig):
    proxy, nodes = rig
    near = nodes["near"]
    wait_until("writes reach the leader", lambda: proxy.who(proxy.write_port) == "near")
    wait_until("probe connections closed", lambda: near.pg.open_now == 0)
    first = [proxy.connect(proxy.write_port) for _ in range(2)]
    assert [greeting(s) for s in first] == ["near", "near"]
    accepted = near.pg.accepted

    third = proxy.connect(proxy.write_port)  # HAProxy accepts it, the node never sees it
    # No persistence, so it waits in the listener's queue for any server's free slot.
    wait_until(
        "the third client waits in the queue",
        lambda: proxy.stat("write", "BACKEND", "qcur") == "1",
    )
    assert proxy.stat("write", "node1_", "scur") == "2"
    assert near.pg.open_now == 2 and near.pg.accepted == accepted

    first[0].close()  # a slot frees: the queued client gets it
    third.settimeout(5)
    assert greeting(third) == "near"
    assert proxy.stat("write", "BACKEND", "qcur") == "0"
    for s in (first[1], third):
        s.close()


def test_checks_speak_https_and_a_node_the_groups_ca_did_not_sign_gets_no_traffic(rig):
    proxy, nodes = rig
    # The group's CA beside the configuration, private to the proxy's user.
    ca = Path(proxy.env["PROXY_DIR"]) / "tls" / "ca.crt"
    assert b64(ca.read_text()) == proxy.env["TLS_CA"]
    assert ca.stat().st_mode & 0o077 == 0
    wait_until("writes reach the leader", lambda: proxy.who(proxy.write_port) == "near")
    wait_until("reads stay local", lambda: proxy.who(proxy.read_port) == "local")
    # The leader's REST API now presents another CA's certificate (an impostor on its
    # address): its checks fail verification although it answers /primary with 200.
    nodes["near"].rest.use_certificate(nodes["near"].rogue)
    wait_until("writes are refused", lambda: proxy.who(proxy.write_port) == "", WRITE_FLIP_S)
    assert proxy.stat("write", "node1_", "status") == "DOWN"
    nodes["local"].rest.use_certificate(nodes["local"].rogue)
    wait_until("reads leave the impostor", lambda: proxy.who(proxy.read_port) == "far", 10)
    # Its own certificate back: traffic follows again.
    nodes["near"].rest.use_certificate(nodes["near"].context)
    wait_until("writes reach the leader again", lambda: proxy.who(proxy.write_port) == "near")


def test_a_reload_keeps_the_leader_up_and_the_replicas_out(rig):
    proxy, nodes = rig
    wait_until("writes reach the leader", lambda: proxy.who(proxy.write_port) == "near")
    nodes["local"].answer(primary=503, read_only=503)  # lagging
    wait_until("reads leave the lagging node", lambda: proxy.who(proxy.read_port) == "near")
    old = set(proxy.pids)

    proc = haproxy_sh("update", {**proxy.env, "SERVER_MAXCONN": "3"})
    assert proc.returncode == 0, proc.stderr
    assert "reloaded" in proc.stdout
    proxy.pids += haproxy_pids(Path(proxy.env["PROXY_DIR"]) / "haproxy.cfg")
    # The new process took the old one's server states: at once, before its own
    # checks, writes reach only the leader and reads avoid the lagging replica.
    assert {proxy.who(proxy.write_port) for _ in range(10)} == {"near"}
    assert {proxy.who(proxy.read_port) for _ in range(10)} == {"near"}
    assert set(proxy.pids) - old, "no new haproxy process after the reload"
