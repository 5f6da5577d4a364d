"""The ssh target's lab: a fleet file's hosts as network namespaces running sshd, on this machine.

    python -m dbfleet.ops.lab [--spec FILE] up        build the lab (idempotent)
    python -m dbfleet.ops.lab [--spec FILE] down      remove everything `up` made (idempotent)
    python -m dbfleet.ops.lab [--spec FILE] status    one line per host; exit 0 all up, 1 some
                                                      down, 3 no lab
    python -m dbfleet.ops.lab [--spec FILE] exec ADDRESS -- CMD...
                                                      run CMD inside that host's namespace

(`scripts/lab.sh` runs this with the clone's Python.) The fleet file is $DBFLEET_SPEC, else
stacks/lab.yaml; the lab reads only `name`, `ssh.user`, `ssh.key` and every
`groups.<g>.regions.<r>.hosts[]` (`address`, `port` default 22), so it does not depend on
the fleet-file models. All host addresses must lie in one IPv4 /24.

What `up` makes, all named after a short lab id (a hash of the fleet name and the /24, so
two labs never clash):

- a bridge ``dbbr-<id>`` holding the /24's ``.1`` (this machine's address in the lab);
- per host, a namespace ``dbfleet-lab-<id>-<last octet>`` whose ``eth0`` (the peer of
  ``dbve-<id>-<octet>`` on the bridge) holds the host's address, with ``lo`` up and no
  default route: nothing in the lab is routed off the machine;
- an ed25519 login key pair (made once, kept), and per host an ed25519 host key and a
  private ``sshd`` (Debian's openssh-server) run inside the namespace on the host's
  address, letting in the login key (root with a key only, no passwords, no PAM);
- in Vault (VAULT_ADDR/VAULT_TOKEN, KV v2 mount ``secret``) at ``ssh.key``:
  ``{private_key, known_hosts}``, the login key and a known_hosts line per host.

What a process started over ssh on a host runs inside that host's namespace (sshd runs
there), so it is reachable only at the host's address. Hosts share this machine's
filesystem.

Everything made is recorded in ``$DBFLEET_HOME/lab/<id>/state.json`` before it is made
(the directory 0700, keys 0600), and `down` removes exactly that: each sshd by its
recorded pid (after checking /proc/<pid>/cmdline), every process left in the lab's
namespaces (sessions, and what was started on the hosts), the namespaces, links, bridge,
the Vault secret and the directory. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from dbfleet import PROJECT_ROOT

DEFAULT_SPEC = PROJECT_ROOT / "stacks" / "lab.yaml"
VAULT_MOUNT = "secret"
SSHD = "/usr/sbin/sshd"
# How long an sshd gets to answer after start, and a process to exit after SIGTERM.
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
POLL_S = 0.05
STATE_FILE = "state.json"
LOGIN_KEY = "login_ed25519"
NS_IFACE = "eth0"
# Where an sshd drops privileges while it authenticates; Debian's package makes it
# at boot (systemd tmpfiles), which a container does not run.
PRIVSEP_DIR = Path("/run/sshd")


class LabError(Exception):
    """A problem with the lab, said so that the user can act on it."""


# Where free_lab_network's claims live: one lock file per /24, in a directory of this
# user's on the tmpfs for locks (labs need root), else in the temporary directory.
LAB_CLAIM_DIR = Path("/run/lock" if Path("/run/lock").is_dir() else tempfile.gettempdir()) / (
    f"dbfleet-lab-{os.getuid()}"
)
# /24 -> the open lock file that claims it; kept open for this process's lifetime.
_claimed: dict[str, int] = {}


def claim(directory: Path, name: str, held: dict[str, int]) -> bool:
    """Takes this process's machine-wide claim `name`: an exclusive, non-blocking flock
    on `directory`/`name`, its open file kept in `held`. The kernel drops the claim when
    the process ends, even by a crash, so a claim never outlives its owner and nothing
    needs cleaning up. False when this or another process holds it already."""
    if name in held:
        return False
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    held[name] = fd
    return True


def _claim(net: str) -> bool:
    """This process's claim on the /24 `net` (see `claim`)."""
    return claim(LAB_CLAIM_DIR, f"{net}.lock", _claimed)


def free_lab_network() -> str:
    """The first three octets of a /24 of 198.18.0.0/16 that no interface of this
    machine uses and no other process has chosen: a lab of its own for a test or a
    benchmark.

    Checking the interfaces alone would race: two processes (test workers running in
    parallel) could both see a /24 unused and both bring a lab up on it. So each chosen
    /24 is also claimed by a lock file that this process holds until it exits; a /24
    another process holds is skipped, whether or not its lab is up yet."""
    used = subprocess.run(
        ["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False
    ).stdout
    for octet in random.sample(range(2, 251), 249):
        net = f"198.18.{octet}"
        if f" {net}." in used:
            continue
        if _claim(net):
            return net
    raise LabError("no free /24 in 198.18.0.0/16 for a lab")


# --------------------------------------------------------------------------------------------
# the fleet file


@dataclass(frozen=True)
class LabHost:
    group: str
    region: str
    address: str
    port: int = 22

    @property
    def octet(self) -> int:
        return int(self.address.rsplit(".", 1)[1])

    @property
    def hostport(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class LabSpec:
    """What the lab needs from a fleet file."""

    name: str
    user: str
    key_path: str
    hosts: tuple[LabHost, ...]

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"{self.hosts[0].address}/24", strict=False)

    @property
    def lab_id(self) -> str:
        return hashlib.sha256(f"{self.name}|{self.network}".encode()).hexdigest()[:6]

    def host(self, address: str) -> LabHost:
        for host in self.hosts:
            if host.address == address:
                return host
        known = ", ".join(h.address for h in self.hosts)
        raise LabError(f"{address} is not a host of lab {self.name} (its hosts: {known})")


def _host(group: str, region: str, raw: Any, where: str) -> LabHost:
    if not isinstance(raw, Mapping) or "address" not in raw:
        raise LabError(f"{where}: a host is a mapping with an `address`")
    try:
        address = ipaddress.IPv4Address(str(raw["address"]))
    except ValueError:
        raise LabError(f"{where}.address: {raw['address']!r} is not an IPv4 address") from None
    port = raw.get("port", 22)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise LabError(f"{where}.port: {port!r} is not a port number")
    return LabHost(group, region, str(address), port)


def _hosts(groups: Any) -> list[LabHost]:
    hosts = []
    for group, body in (groups or {}).items() if isinstance(groups, Mapping) else []:
        regions = (body or {}).get("regions") if isinstance(body, Mapping) else None
        for region, rbody in (regions or {}).items() if isinstance(regions, Mapping) else []:
            listed = (rbody or {}).get("hosts") if isinstance(rbody, Mapping) else None
            for i, raw in enumerate(listed or []):
                hosts.append(
                    _host(group, region, raw, f"groups.{group}.regions.{region}.hosts[{i}]")
                )
    return hosts


def read_spec(path: Path) -> LabSpec:
    """The lab's part of the fleet file at `path`. LabError says what is wrong."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise LabError(f"cannot read the fleet file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise LabError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise LabError(f"{path}: a fleet file is a mapping")
    ssh = doc.get("ssh") or {}
    if not isinstance(ssh, Mapping) or not ssh.get("key"):
        raise LabError(f"{path}: ssh.key (the Vault path of the lab's login key) is missing")
    hosts = _hosts(doc.get("groups"))
    if not hosts:
        raise LabError(f"{path}: no groups.<group>.regions.<region>.hosts to build a lab of")
    spec = LabSpec(
        name=str(doc.get("name") or "dbfleet"),
        user=str(ssh.get("user") or "root"),
        key_path=str(ssh["key"]).strip("/"),
        hosts=tuple(hosts),
    )
    _check_addresses(spec, path)
    return spec


def _check_addresses(spec: LabSpec, path: Path) -> None:
    net = spec.network
    outside = [h.address for h in spec.hosts if ipaddress.ip_address(h.address) not in net]
    if outside:
        raise LabError(f"{path}: the lab's hosts must share one /24 ({net}); not: {outside}")
    seen: set[str] = set()
    for host in spec.hosts:
        if host.address in seen:
            raise LabError(f"{path}: host {host.address} is listed twice")
        seen.add(host.address)
        if host.octet in (0, 1, 255):
            raise LabError(
                f"{path}: host {host.address}: .0, .1 (this machine's address in the lab) "
                f"and .255 of {net} cannot be hosts"
            )


def spec_path(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("DBFLEET_SPEC") or DEFAULT_SPEC)


# --------------------------------------------------------------------------------------------
# running things


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if check and proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(
            f"`{' '.join(argv)}` failed: {why[-1] if why else f'exit {proc.returncode}'}"
        )
    return proc


def _links() -> set[str]:
    return {link["ifname"] for link in json.loads(_run(["ip", "-j", "link", "show"]).stdout)}


def _namespaces() -> set[str]:
    return {line.split()[0] for line in _run(["ip", "netns", "list"]).stdout.splitlines() if line}


def _addresses(argv_prefix: Sequence[str], dev: str) -> set[str]:
    out = _run([*argv_prefix, "-j", "-4", "addr", "show", "dev", dev]).stdout
    return {f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link["addr_info"]}


def _pid_alive(pid: int, marker: str) -> bool:
    """Whether `pid` runs and its command line names `marker` (a pid can be reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline


def _wait_until(what: str, done: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise LabError(f"{what}: not after {timeout_s:g} s")
        time.sleep(POLL_S)


def _answers(host: LabHost) -> bool:
    """Whether an SSH server answers at the host's address (its banner)."""
    try:
        with socket.create_connection((host.address, host.port), timeout=1) as conn:
            conn.settimeout(1)
            return conn.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _stop(pids: Sequence[int], marker: str | None = None) -> None:
    """SIGTERM, a wait, then SIGKILL for what still runs. With `marker`, only a
    process whose command line names it is touched."""
    alive = [p for p in pids if marker is None or _pid_alive(p, marker)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists()]
        if alive:
            time.sleep(POLL_S)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _write_private(path: Path, text: str) -> bool:
    """Writes `text` to `path` (0600) unless it holds it already; True when written."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return False
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
    return True


def _keygen(path: Path, comment: str) -> None:
    if not path.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    path.chmod(0o600)


# --------------------------------------------------------------------------------------------
# the lab


@dataclass
class HostStatus:
    host: LabHost
    namespace: str
    namespace_up: bool
    sshd_pid: int | None
    sshd_up: bool


class Lab:
    """One fleet file's lab under `home` (a DBFLEET_HOME)."""

    def __init__(self, spec: LabSpec, home: Path) -> None:
        self.spec = spec
        self.id = spec.lab_id
        self.dir = Path(home) / "lab" / self.id
        self.bridge = f"dbbr-{self.id}"
        self.bridge_address = f"{spec.network.network_address + 1}/{spec.network.prefixlen}"

    # names and files
    def namespace(self, host: LabHost) -> str:
        return f"dbfleet-lab-{self.id}-{host.octet}"

    def veth(self, host: LabHost) -> str:
        return f"dbve-{self.id}-{host.octet}"

    def host_dir(self, host: LabHost) -> Path:
        return self.dir / "hosts" / host.address

    def sshd_config(self, host: LabHost) -> Path:
        return self.host_dir(host) / "sshd_config"

    def authorized_keys(self, host: LabHost) -> Path:
        return self.host_dir(host) / "authorized_keys"

    def host_key(self, host: LabHost) -> Path:
        return self.host_dir(host) / "ssh_host_ed25519_key"

    @property
    def login_key(self) -> Path:
        return self.dir / LOGIN_KEY

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    def state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def _record(self, **extra: Any) -> None:
        """Writes what the lab is made of, before making it, so `down` finds it all."""
        state = self.state() or {}
        state.update(
            id=self.id,
            name=self.spec.name,
            network=str(self.spec.network),
            bridge=self.bridge,
            bridge_address=self.bridge_address,
            hosts=[
                {
                    **asdict(h),
                    "namespace": self.namespace(h),
                    "veth": self.veth(h),
                    "dir": str(self.host_dir(h)),
                    "sshd_config": str(self.sshd_config(h)),
                    "pid_file": str(self.host_dir(h) / "sshd.pid"),
                }
                for h in self.spec.hosts
            ],
            **extra,
        )
        _write_private(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def sshd_pid(self, host: LabHost) -> int | None:
        try:
            pid = int((self.host_dir(host) / "sshd.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid, str(self.sshd_config(host))) else None

    # up
    def up(self, env: Mapping[str, str] = os.environ) -> list[str]:
        """Builds what is missing of the lab; returns what it did (empty: nothing)."""
        _require_root_and_tools()
        self._check_network_free()
        did: list[str] = []
        self.dir.parent.parent.mkdir(parents=True, exist_ok=True)
        for path in (self.dir.parent, self.dir, self.dir / "hosts"):
            path.mkdir(mode=0o700, exist_ok=True)
            path.chmod(0o700)
        self._record()
        did += self._make_bridge()
        for host in self.spec.hosts:
            did += self._make_host_network(host)
        did += self._make_keys()
        started = [h for h in self.spec.hosts if self._start_sshd(h, did)]
        for host in started:
            _wait_until(
                f"sshd of {host.hostport} answering", lambda h=host: _answers(h), READY_TIMEOUT_S
            )
        if self._store_in_vault(env):
            did.append(
                f"stored the login key and known_hosts in Vault at "
                f"{VAULT_MOUNT}/{self.spec.key_path}"
            )
        return did

    def _check_network_free(self) -> None:
        """Refuses a /24 that an interface other than this lab's bridge already uses:
        two routes to it would send the lab's traffic astray."""
        net = self.spec.network
        for link in json.loads(_run(["ip", "-j", "-4", "addr", "show"]).stdout):
            for a in link.get("addr_info", []):
                if link["ifname"] != self.bridge and ipaddress.ip_address(a["local"]) in net:
                    raise LabError(
                        f"{net} is in use on this machine ({a['local']} on {link['ifname']}); "
                        f"give the lab's hosts addresses in another /24"
                    )

    def _make_bridge(self) -> list[str]:
        did = []
        if self.bridge not in _links():
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            did.append(f"made bridge {self.bridge}")
        if self.bridge_address not in _addresses(["ip"], self.bridge):
            _run(["ip", "addr", "add", self.bridge_address, "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        return did

    def _make_host_network(self, host: LabHost) -> list[str]:
        ns, veth, did = self.namespace(host), self.veth(host), []
        if ns not in _namespaces():
            _run(["ip", "netns", "add", ns])
            did.append(f"made namespace {ns}")
        if veth not in _links():
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", NS_IFACE, "netns", ns])
            did.append(f"made link {veth}")
        _run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        in_ns = ["ip", "-n", ns]
        if f"{host.address}/24" not in _addresses(in_ns, NS_IFACE):
            _run([*in_ns, "addr", "add", f"{host.address}/24", "dev", NS_IFACE])
        _run([*in_ns, "link", "set", NS_IFACE, "up"])
        _run([*in_ns, "link", "set", "lo", "up"])
        return did

    def _make_keys(self) -> list[str]:
        did = []
        if not self.login_key.exists():
            did.append("made the login key")
        _keygen(self.login_key, f"dbfleet-lab-{self.id}")
        public = (self.login_key.with_suffix(".pub")).read_text()
        for host in self.spec.hosts:
            self.host_dir(host).mkdir(mode=0o700, exist_ok=True)
            if not self.host_key(host).exists():
                did.append(f"made the host key of {host.address}")
            _keygen(self.host_key(host), f"dbfleet-lab-{self.id}-{host.address}")
            if _write_private(self.authorized_keys(host), public):
                did.append(f"wrote authorized_keys of {host.address}")
            if _write_private(self.sshd_config(host), self._sshd_config_text(host)):
                did.append(f"wrote sshd_config of {host.address}")
                pid = self.sshd_pid(host)
                if pid is not None:  # a running sshd reads its config only at start
                    _stop([pid], str(self.sshd_config(host)))
        return did

    def _sshd_config_text(self, host: LabHost) -> str:
        d = self.host_dir(host)
        return "".join(
            line + "\n"
            for line in (
                f"# sshd of lab host {host.address} ({host.group}/{host.region}); made by lab up",
                f"ListenAddress {host.address}:{host.port}",
                f"HostKey {self.host_key(host)}",
                f"PidFile {d / 'sshd.pid'}",
                f"AuthorizedKeysFile {str(self.authorized_keys(host)).replace('%', '%%')}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                # The lab's files are 0700/0600, but $DBFLEET_HOME may sit below a
                # world-writable directory (/tmp), which StrictModes refuses.
                "StrictModes no",
                "PrintMotd no",
                "PrintLastLog no",
                # One master connection carries every script run on the host at once.
                "MaxSessions 100",
                "MaxStartups 100:30:200",
            )
        )

    def _start_sshd(self, host: LabHost, did: list[str]) -> bool:
        if self.sshd_pid(host) is not None:
            return False
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        log = self.host_dir(host) / "sshd.log"
        # A clean environment: sshd would otherwise hold the caller's (VAULT_TOKEN).
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        proc = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.namespace(host),
                SSHD,
                "-f",
                str(self.sshd_config(host)),
                "-E",
                str(log),
            ],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode != 0:
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            raise LabError(
                f"sshd of lab host {host.address} did not start (exit {proc.returncode}): "
                f"{(proc.stderr.strip() or ' '.join(tail) or 'no message')}"
            )
        _wait_until(
            f"sshd of {host.hostport} writing its pid",
            lambda: self.sshd_pid(host) is not None,
            READY_TIMEOUT_S,
        )
        did.append(f"started sshd of {host.hostport} (pid {self.sshd_pid(host)})")
        return True

    # what Vault holds
    def known_hosts(self) -> str:
        lines = []
        for host in self.spec.hosts:
            kind, key = self.host_key(host).with_suffix(".pub").read_text().split()[:2]
            name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
            lines.append(f"{name} {kind} {key}\n")
        return "".join(lines)

    def credentials(self) -> dict[str, str]:
        """What `up` stores in Vault: the login key and the hosts' pinned keys."""
        return {"private_key": self.login_key.read_text(), "known_hosts": self.known_hosts()}

    def _store_in_vault(self, env: Mapping[str, str]) -> bool:
        from dbfleet import vault

        client = vault.client_from_env(env)
        wanted = self.credentials()
        self._record(vault={"mount": VAULT_MOUNT, "path": self.spec.key_path})
        current, _ = vault._read(client, VAULT_MOUNT, self.spec.key_path, "read")
        if current == wanted:
            return False
        try:
            client.secrets.kv.v2.create_or_update_secret(
                path=self.spec.key_path, secret=wanted, mount_point=VAULT_MOUNT
            )
        except vault._translated() as exc:
            raise vault._translate(
                exc,
                vault._addr_of(client),
                "writing",
                VAULT_MOUNT,
                self.spec.key_path,
                "create and update",
            ) from None
        return True

    # status
    def status(self) -> list[HostStatus]:
        namespaces = _namespaces()
        out = []
        for host in self.spec.hosts:
            ns = self.namespace(host)
            pid = self.sshd_pid(host)
            out.append(
                HostStatus(host, ns, ns in namespaces, pid, pid is not None and _answers(host))
            )
        return out

    # exec
    def exec_argv(self, address: str, command: Sequence[str]) -> list[str]:
        """The command line that runs `command` inside the namespace of the host at `address`."""
        host = self.spec.host(address)
        if self.namespace(host) not in _namespaces():
            raise LabError(
                f"lab host {address} is not up (no namespace {self.namespace(host)}); run: lab up"
            )
        if not command:
            raise LabError("no command to run (exec ADDRESS -- CMD...)")
        return ["ip", "netns", "exec", self.namespace(host), *command]

    # down
    def down(self, env: Mapping[str, str] = os.environ) -> list[str]:
        """Removes what the state file records; returns what it did (empty: nothing was left)."""
        state = self.state()
        if state is None:
            return []
        _require_root_and_tools()
        did: list[str] = []
        namespaces, links = _namespaces(), _links()
        for host in state.get("hosts", []):
            did += _remove_host(host, namespaces, links)
        if state.get("bridge") in _links():
            _run(["ip", "link", "del", state["bridge"]])
            did.append(f"removed bridge {state['bridge']}")
        if state.get("vault"):
            did += _forget_in_vault(state["vault"], env)
        shutil.rmtree(self.dir)
        did.append(f"removed {self.dir}")
        with contextlib.suppress(OSError):  # only when no other lab is left in it
            self.dir.parent.rmdir()
        return did


def _remove_host(host: Mapping[str, Any], namespaces: set[str], links: set[str]) -> list[str]:
    did = []
    try:
        pid = int(Path(host["pid_file"]).read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and _pid_alive(pid, host["sshd_config"]):
        _stop([pid], host["sshd_config"])
        did.append(f"stopped sshd of {host['address']} (pid {pid})")
    ns = host["namespace"]
    if ns in namespaces:
        # What still runs there (ssh sessions, what was started on the host) lives
        # only in this namespace: the host goes, and so do they.
        left = [int(p) for p in _run(["ip", "netns", "pids", ns]).stdout.split()]
        if left:
            _stop(left)
            did.append(f"stopped {len(left)} process(es) of host {host['address']}")
        _run(["ip", "netns", "del", ns])
        did.append(f"removed namespace {ns}")
    if host["veth"] in links and host["veth"] in _links():
        # Deleting the namespace removes its end of the pair, and the kernel then
        # removes this end on its own, maybe while we look: gone is what was asked.
        gone = _run(["ip", "link", "del", host["veth"]], check=False)
        if gone.returncode != 0 and host["veth"] in _links():
            raise LabError(f"`ip link del {host['veth']}` failed: {gone.stderr.strip()}")
        did.append(f"removed link {host['veth']}")
    return did


def _forget_in_vault(where: Mapping[str, str], env: Mapping[str, str]) -> list[str]:
    from dbfleet import vault

    name = f"{where['mount']}/{where['path']}"
    try:
        client = vault.client_from_env(env)
        vault.delete_group_secrets(client, where["mount"], where["path"])
    except vault.VaultError as exc:
        return [f"left the login key in Vault at {name} ({exc})"]
    return [f"deleted {name} in Vault"]


def _require_root_and_tools() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, links, sshd): run it as root")
    missing = [t for t in ("ip", "ssh-keygen") if shutil.which(t) is None]
    if not Path(SSHD).is_file():
        missing.append(SSHD)
    if missing:
        raise LabError(
            f"missing {', '.join(missing)}: run bash scripts/setup.sh "
            f"(Debian packages iproute2, openssh-client, openssh-server)"
        )


def dbfleet_home(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("DBFLEET_HOME") or PROJECT_ROOT / ".dbfleet")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    from dbfleet.vault import VaultError

    try:
        yield
    except (LabError, VaultError, OSError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, command = args[:cut], args[cut + 1 :]
    parser = argparse.ArgumentParser(prog="lab", description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--spec", type=Path, help="fleet file (default: $DBFLEET_SPEC, else stacks/lab.yaml)"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("up", help="build the lab (idempotent)")
    sub.add_parser("down", help="remove everything up made")
    sub.add_parser("status", help="each host: namespace, address, sshd")
    ex = sub.add_parser("exec", help="run a command in a host's namespace: exec ADDRESS -- CMD...")
    ex.add_argument("address")
    opts = parser.parse_args(args)
    with _errors():
        lab = Lab(read_spec(opts.spec or spec_path()), dbfleet_home())
        if opts.action == "exec":
            argv_ = lab.exec_argv(opts.address, command)
            os.execvp(argv_[0], argv_)
        if opts.action == "status":
            return _print_status(lab)
        did = lab.up() if opts.action == "up" else lab.down()
        for line in did:
            print(f"lab: {line}")
        outcome = f"{len(did)} change(s)" if did else "nothing to do"
        print(f"lab {lab.spec.name} ({lab.id}, {lab.spec.network}): {opts.action}, {outcome}")
    return 0


def _print_status(lab: Lab) -> int:
    if lab.state() is None:
        print(f"lab {lab.spec.name} ({lab.id}, {lab.spec.network}): down")
        return 3
    rows = lab.status()
    for r in rows:
        sshd = f"up (pid {r.sshd_pid})" if r.sshd_up else "down"
        ns = r.namespace if r.namespace_up else f"{r.namespace} (missing)"
        print(f"{r.host.group}/{r.host.region:<4} {r.host.hostport:<21} ns {ns:<28} sshd {sshd}")
    return 0 if all(r.sshd_up and r.namespace_up for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
