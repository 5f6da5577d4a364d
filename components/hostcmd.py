"""HostScript: a resource that runs one of dbfleet's host scripts on a host.

Every piece of a fleet that lives on a machine (an OS account, a PostgreSQL node,
an HAProxy) is a `HostScript`: an idempotent shell script from
`components/scripts/` run with an action (`create`, `update`, `delete`, `check`)
over a host connection. The connection is data — local today, SSH for real hosts —
so no component hard-codes where it runs.

Why a dynamic provider and not pulumi-command: the pulumi-command provider binary
cannot be built from the module proxy this project can reach (its provider module
is untagged and none of its pseudo-versions are served), so dbfleet carries this
small provider in Python instead; it runs inside Pulumi's own Python provider host.

Secrets travel only in `secret_environment`: they reach the script through its
environment (local) or its standard input (SSH), never a command line; they are
stored as Pulumi secrets and scrubbed from any error text.

Over SSH (`Connection(kind="ssh", ...)`), the login key and the pinned host keys
come in a separate input, `credentials` (``{private_key, known_hosts}`` and an
optional ``vault_path`` named in messages), which never reaches the host: the
OpenSSH client reads them from 0600 files in a private directory removed after
the run. Host keys are checked strictly (no trust on first use). One master
connection per host and login is shared by every script run on it for
CONTROL_PERSIST_S (OpenSSH ControlMaster in a private 0700 directory): a run of a
stack pays one handshake per host, not one per resource. The model follows
pulumi-command's `remote.Command` connection: user, port, private key, a proxy
(bastion) host, and dial retries with a per-dial timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
import re
import shlex
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pulumi
from pulumi.dynamic import (
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

SCRIPTS_DIR = Path(__file__).parent / "scripts"
COMPONENTS_DIR = Path(__file__).parent
LIB_SCRIPT = "lib.sh"
DEFAULT_TIMEOUT_S = 300

# What a script writes to reach a file next to it. Run from a checkout, bash
# reads the file; shipped to a host, the line is replaced by the file's text,
# so a script and everything it uses travel as one program on standard input
# (the same for a local run and, later, over SSH).
_HERE = r'"\$\(dirname -- "\$\{BASH_SOURCE\[0\]\}"\)/'
# `. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"`: a shell library, inlined.
_SOURCE_LINE = re.compile(r"^[ \t]*\.[ \t]+" + _HERE + r'(?P<path>[A-Za-z0-9_.-]+\.sh)"[ \t]*$')
# `SCRAM_PY=$(<"$(dirname -- "${BASH_SOURCE[0]}")/../scram.py")`: a file's text
# in a variable, inlined as a single-quoted string.
_EMBED_LINE = re.compile(
    r"^(?P<var>[A-Z_][A-Z0-9_]*)=\$\(<" + _HERE + r'(?P<path>[A-Za-z0-9_./-]+)"\)[ \t]*$'
)


def _drift_exit_code() -> int:
    """The exit code by which a script's `check` says "drifted", as lib.sh defines it.

    The scripts produce it and this provider interprets it; lib.sh holds the one
    definition because the scripts must also run by themselves, from a checkout.
    """
    found = re.search(
        r"^DRIFT_EXIT_CODE=(\d+)$", (SCRIPTS_DIR / LIB_SCRIPT).read_text(), re.MULTILINE
    )
    if not found:
        raise RuntimeError(f"{SCRIPTS_DIR / LIB_SCRIPT} does not define DRIFT_EXIT_CODE")
    return int(found.group(1))


# Exit code by which a script's `check` action says "this host has drifted from
# what was declared" (a stopped database, a missing proxy): `up` then re-runs it.
DRIFT_EXIT_CODE = _drift_exit_code()


# pulumi-command's defaults for remote.Command's connection.
DEFAULT_DIAL_ERROR_LIMIT = 10
DEFAULT_PER_DIAL_TIMEOUT_S = 15
_HOST_NAME = re.compile(
    # DNS labels of 1..63 letters, digits and inner hyphens, at most 253 characters in all.
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
_USER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
# `[user@]host[:port]`, host a name, an IPv4 address or a bracketed IPv6 address.
_PROXY = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^@:\s\[\]]+)(?::(?P<port>\d+))?$"
)


def _valid_host(host: str) -> bool:
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return True
    return bool(_HOST_NAME.match(host))


def _check_proxy(proxy: str) -> None:
    found = _PROXY.match(proxy)
    host = (found["host"] or "").strip("[]") if found else ""
    ok = (
        found is not None
        and _valid_host(host)
        and (found["user"] is None or bool(_USER_NAME.match(found["user"])))
        and (found["port"] is None or 1 <= int(found["port"]) <= 65535)
    )
    if not ok:
        raise ValueError(f"proxy {proxy!r} is not user@host:port (user and port optional)")


@dataclass(frozen=True, kw_only=True)
class Connection:
    """Where a host script runs: this machine, or a host reached over SSH.

    For ssh: `user` logs in on `host`:`port`, optionally through `proxy`
    (a bastion, ``user@host:port``, reached with the same key and pinned host
    keys); a dial that fails (no route, refused, timed out) is tried again up to
    `dial_error_limit` times in all (-1: without limit), each dial given
    `per_dial_timeout_s` seconds.

    `credentials` (ssh only; a HostScript requires them): ``{"private_key": <OpenSSH private
    key>, "known_hosts": <known_hosts lines pinning the host and any proxy>,
    "vault_path": <where they live, named in errors; optional>}``, usually a
    secret Output read from Vault. They are not among the connection's inputs
    (`to_inputs`): a HostScript keeps them in its own `credentials` input, which
    is never compared, so a rotated key does not re-run every script.
    """

    kind: Literal["local", "ssh"] = "local"
    host: str = "localhost"
    port: int = 22
    user: str = "root"
    proxy: str | None = None
    dial_error_limit: int = DEFAULT_DIAL_ERROR_LIMIT
    per_dial_timeout_s: int = DEFAULT_PER_DIAL_TIMEOUT_S
    credentials: pulumi.Input[Mapping[str, pulumi.Input[str]]] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.kind not in ("local", "ssh"):
            raise ValueError(f"connection kind {self.kind!r} is not local or ssh")
        if self.kind == "local":
            if self.credentials is not None:
                raise ValueError("a local connection takes no ssh credentials")
            return
        if not _valid_host(self.host):
            raise ValueError(f"ssh host {self.host!r} is not an IP address or DNS name")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"ssh port {self.port} of {self.host} is not in 1..65535")
        if not _USER_NAME.match(self.user):
            raise ValueError(f"ssh user {self.user!r} of {self.host} is not a user name")
        if self.proxy is not None:
            _check_proxy(self.proxy)
        if self.dial_error_limit == 0 or self.dial_error_limit < -1:
            raise ValueError("dial_error_limit is a number of dials >= 1, or -1 (no limit)")
        if self.per_dial_timeout_s < 1:
            raise ValueError("per_dial_timeout_s must be at least 1 second")

    def to_inputs(self) -> dict[str, Any]:
        if self.kind == "local":
            # Exactly the inputs local stacks were deployed with: another shape
            # would show every deployed HostScript as changed.
            return {"kind": "local", "host": self.host, "user": "", "port": self.port}
        return {
            "kind": "ssh",
            "host": self.host,
            "user": self.user,
            "port": self.port,
            "proxy": self.proxy or "",
            "dial_error_limit": self.dial_error_limit,
            "per_dial_timeout_s": self.per_dial_timeout_s,
        }


LOCAL = Connection()


def _sibling(script_dir: Path, relative: str) -> Path:
    """A file a script names relative to its own directory; only inside components/."""
    path = (script_dir / relative).resolve()
    if not path.is_relative_to(COMPONENTS_DIR.resolve()) or not path.is_file():
        raise ValueError(f"{relative!r} (from {script_dir}) is not a file under {COMPONENTS_DIR}")
    return path


def _inline(path: Path, name: str, seen: set[Path]) -> str:
    """`path`'s text with its source and embed lines replaced by the files they name."""
    out = []
    for line in path.read_text().splitlines(keepends=True):
        source = _SOURCE_LINE.match(line)
        embed = _EMBED_LINE.match(line)
        if source:
            lib = _sibling(path.parent, source["path"])
            if lib not in seen:
                seen.add(lib)
                out.append(_inline(lib, name, seen))
                if lib.name == LIB_SCRIPT:
                    # Run from stdin, $0 is "bash": name the script in its messages instead.
                    out.append(f"SCRIPT_NAME={shlex.quote(name)}\n")
        elif embed:
            text = _sibling(path.parent, embed["path"]).read_text()
            out.append(f"{embed['var']}={shlex.quote(text)}\n")
        elif "BASH_SOURCE" in line and not line.lstrip().startswith("#"):
            # Any other way of reaching a file next to the script would find
            # nothing on a remote host: refuse it here rather than there.
            raise ValueError(f"{path.name}: cannot ship this line to a host: {line.strip()}")
        else:
            out.append(line)
    return "".join(out)


def script_text(name: str) -> str:
    """The program a host runs for `name`: the script with every file it uses inlined."""
    path = SCRIPTS_DIR / name
    if not path.is_file():
        raise ValueError(f"unknown host script {name!r} (looked in {SCRIPTS_DIR})")
    return _inline(path, name, set())


def script_digest(name: str) -> str:
    return hashlib.sha256(script_text(name).encode()).hexdigest()


def _scrub(text: str, secrets: dict[str, str]) -> str:
    for value in secrets.values():
        if value:
            text = text.replace(value, "[secret]")
    return text


def run_script(
    connection: dict[str, Any],
    script: str,
    action: str,
    environment: dict[str, str],
    secret_environment: dict[str, str],
    timeout_s: int = DEFAULT_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Runs `script action` on the connection's host; returns the finished process.

    `connection` is Connection.to_inputs(); for ssh, with the HostScript's
    `credentials` added under "credentials". SshError when an SSH connection fails.
    """
    program = script_text(script)
    if connection.get("kind", "local") == "local":
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "VAULT_"))}
        env.update(environment)
        env.update(secret_environment)
        return subprocess.run(
            ["bash", "-s", "--", action],
            input=program,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    # SSH: the environment, secrets included, is sent as `export` lines on stdin
    # (the credentials are not: they are for the client, not the host).
    preamble = "".join(
        f"export {k}={shlex.quote(v)}\n" for k, v in {**environment, **secret_environment}.items()
    )
    # A login other than root runs the script through sudo, without a password
    # prompt (-n): the scripts create users and install packages.
    sudo = [] if (connection.get("user") or "root") == "root" else ["sudo", "-n", "--"]
    return run_ssh(connection, [*sudo, "bash", "-s", "--", action], preamble + program, timeout_s)


# --- SSH -----------------------------------------------------------------------
# How long an idle master connection stays up for the next script on its host.
CONTROL_PERSIST_S = 60
# A unix socket path is at most 107 bytes; ssh adds a 17-character suffix while
# binding, and "-%C" becomes 41 characters.
_MAX_SOCKET_PATH = 107 - 17 - 41
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 5.0
_SSH_FAILED = 255

# What OpenSSH prints (LogLevel ERROR) when it could not get a connection up, as
# opposed to a host key or login refusal, or a script that failed on the host.
_DIAL_FAILURE = re.compile(
    r"^(?:ssh: connect to host \S+ port \d+: (?P<why>.+)"
    r"|ssh: Could not resolve hostname \S+: (?P<dns>.+)"
    r"|(?P<banner>Connection timed out during banner exchange)"
    r"|kex_exchange_identification: (?P<kex>.+)"
    r"|Connection (?P<closed>closed|reset) by \S+ port \d+"
    r"|channel \d+: open failed: connect failed: (?P<hop>.+)"
    r"|mux_client_request_session: (?P<mux>session request failed.*))$",
    re.MULTILINE,
)
_HOST_KEY_CHANGED = re.compile(
    r"^Host key for (?P<host>\S+) has changed and you have requested strict checking",
    re.MULTILINE,
)
_HOST_KEY_CHANGED_BANNER = "REMOTE HOST IDENTIFICATION HAS CHANGED"
_HOST_KEY_UNKNOWN = re.compile(
    r"^No \S+ host key is known for (?P<host>\S+) and you have requested strict checking",
    re.MULTILINE,
)
_LOGIN_REFUSED = re.compile(r"^(?P<user>\S+)@(?P<host>\S+): Permission denied \(", re.MULTILINE)


class SshError(RuntimeError):
    """An SSH connection failed before the script ran: one line naming the host."""


def _bare(host: str) -> str:
    """`[198.18.0.1]:2222` or `198.18.0.1` as ssh prints it -> `198.18.0.1`."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _who(connection: Mapping[str, Any], reported: str | None) -> str:
    """The host a message is about: the target, or its proxy when ssh names that."""
    target = f"host {_hostport(connection['host'], int(connection.get('port') or 22))}"
    proxy = connection.get("proxy") or ""
    if reported and proxy and _bare(reported) != connection["host"]:
        return f"proxy {proxy} of {target}"
    return target


def _credentials(connection: Mapping[str, Any]) -> dict[str, str]:
    creds = connection.get("credentials")
    if not isinstance(creds, Mapping) or not all(
        isinstance(creds.get(k), str) and creds[k].strip() for k in ("private_key", "known_hosts")
    ):
        raise SshError(
            f"{_who(connection, None)}: no ssh credentials for this connection "
            f"(a private_key and the hosts' known_hosts are needed)"
        )
    return {k: str(v) for k, v in creds.items() if isinstance(v, str)}


def _secret_values(creds: Mapping[str, str]) -> dict[str, str]:
    """What to scrub from any text: the key, and each of its lines on its own."""
    key = creds.get("private_key", "")
    lines = {f"key-line-{i}": ln for i, ln in enumerate(key.splitlines()) if len(ln) >= 16}
    return {"private_key": key, **lines}


def _private_directory(path: Path) -> Path:
    """`path` as a directory only this user can enter, made if missing; refuses
    one that is a symlink, another user's, or open to others (the control
    sockets in it are logged-in connections to every host)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=False)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise SshError(f"{path} is not a directory of user {os.getuid()}: refusing to use it")
    if info.st_mode & 0o077:
        raise SshError(f"{path} is open to other users (mode {info.st_mode & 0o777:o}); chmod 700")
    return path


def control_directory() -> Path:
    """The private directory of this user's SSH master connections.

    $DBFLEET_SSH_CONTROL_DIR when set (tests), else $XDG_RUNTIME_DIR/dbfleet-ssh
    (a per-user tmpfs), else /tmp/dbfleet-ssh-<uid>.
    """
    chosen = os.environ.get("DBFLEET_SSH_CONTROL_DIR")
    if chosen:
        return _private_directory(Path(chosen))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir() and Path(runtime).stat().st_uid == os.getuid():
        return _private_directory(Path(runtime) / "dbfleet-ssh")
    return _private_directory(Path(f"/tmp/dbfleet-ssh-{os.getuid()}"))


def control_prefix(connection: Mapping[str, Any]) -> Path:
    """Where the master connections of this login on this host live: the sockets
    are `<prefix>-<%C>` (one per hop: a proxy has its own), the lock `<prefix>.lock`.

    Keyed by the credentials too: a master is only ever reused by a run that
    would have been let in with the same key and host keys, so a changed pin
    is always checked on a new connection.
    """
    creds = _credentials(connection)
    identity = "\0".join(
        [
            str(connection.get("user") or "root"),
            connection["host"],
            str(connection.get("port") or 22),
            str(connection.get("proxy") or ""),
            creds["private_key"],
            creds["known_hosts"],
        ]
    )
    path = control_directory() / hashlib.sha256(identity.encode()).hexdigest()[:12]
    if len(str(path)) > _MAX_SOCKET_PATH:
        raise SshError(
            f"{path} is too long for a unix socket; set a shorter DBFLEET_SSH_CONTROL_DIR"
        )
    return path


def _ssh_config(connection: Mapping[str, Any], key: Path, known_hosts: Path, prefix: Path) -> str:
    """Every option the client uses; with `-F` nothing comes from ~/.ssh or /etc/ssh,
    and a ProxyJump hop is started with the same file, so the proxy's key is
    checked against the same pins and logged into with the same key."""
    quoted = {
        name: '"' + str(p).replace("%", "%%") + '"'
        for name, p in (("key", key), ("known_hosts", known_hosts))
    }
    lines = [
        "BatchMode yes",
        "StrictHostKeyChecking yes",
        f"UserKnownHostsFile {quoted['known_hosts']}",
        "GlobalKnownHostsFile /dev/null",
        "UpdateHostKeys no",
        "IdentitiesOnly yes",
        "IdentityAgent none",
        f"IdentityFile {quoted['key']}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        f"ConnectTimeout {int(connection.get('per_dial_timeout_s') or DEFAULT_PER_DIAL_TIMEOUT_S)}",
        "ConnectionAttempts 1",
        "ServerAliveInterval 15",
        "ServerAliveCountMax 3",
        "ControlMaster auto",
        # %C (a hash of this machine, host, port, user): the proxy hop, which
        # reads this file too, gets a master of its own.
        f'ControlPath "{str(prefix).replace("%", "%%")}-%C"',
        f"ControlPersist {CONTROL_PERSIST_S}",
        "LogLevel ERROR",
    ]
    if connection.get("proxy"):
        # Only for the target: the hop reads this file too, and would loop.
        lines += [f"Host {connection['host']}", f"  ProxyJump {connection['proxy']}"]
    return "".join(line + "\n" for line in lines)


@contextlib.contextmanager
def _client_files(connection: Mapping[str, Any]) -> Iterator[tuple[Path, Path]]:
    """(ssh config, control prefix): the key and known_hosts in 0600 files of a
    0700 directory that is removed, with them, when the block ends."""
    creds = _credentials(connection)
    prefix = control_prefix(connection)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=prefix.parent))
    try:
        key, known_hosts, config = tmp / "id", tmp / "known_hosts", tmp / "config"
        for path, text in (
            (key, creds["private_key"].rstrip("\n") + "\n"),
            (known_hosts, creds["known_hosts"].rstrip("\n") + "\n"),
            (config, _ssh_config(connection, key, known_hosts, prefix)),
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        yield config, prefix
    finally:
        for child in tmp.iterdir():
            child.unlink()
        tmp.rmdir()


def ssh_argv(connection: Mapping[str, Any], config: Path, *extra: str) -> list[str]:
    """`ssh -F <config> -p <port> -l <user> <extra...> -- <host>`: no secret in it."""
    return [
        "ssh", "-F", str(config),
        "-p", str(int(connection.get("port") or 22)),
        "-l", str(connection.get("user") or "root"),
        *extra, "--", connection["host"],
    ]  # fmt: skip


def _failure(
    connection: Mapping[str, Any], creds: Mapping[str, str], stderr: str
) -> tuple[str, str] | None:
    """("dial", reason) for a connection that did not come up, ("fatal", message)
    for a host key or login refusal, None for anything else (the script's own)."""
    where = creds.get("vault_path") or "the fleet's ssh key path in Vault"
    found = _HOST_KEY_CHANGED.search(stderr)
    if found or _HOST_KEY_CHANGED_BANNER in stderr:
        who = _who(connection, found["host"] if found else None)
        return "fatal", (
            f"{who}: its host key does not match the one pinned in Vault (known_hosts); "
            f"if the host was rebuilt, update known_hosts at {where}, else do not connect"
        )
    if found := _HOST_KEY_UNKNOWN.search(stderr):
        return "fatal", (
            f"{_who(connection, found['host'])}: no host key is pinned for it in Vault "
            f"(known_hosts at {where}); add its public host key there, checked out of band "
            f"(dbfleet never trusts a host key on first use)"
        )
    if found := _LOGIN_REFUSED.search(stderr):
        return "fatal", (
            f"{_who(connection, found['host'])}: refused the login key for user "
            f"{found['user']}: check authorized_keys"
        )
    if found := _DIAL_FAILURE.search(stderr):
        reason = next((v for v in found.groupdict().values() if v), found.group(0))
        return "dial", {"closed": "connection closed", "reset": "connection reset"}.get(
            reason, reason
        )
    return None


def _dial(
    connection: Mapping[str, Any], argv: list[str], stdin: str | None, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """Runs ssh, again after a failed dial (with backoff) up to the dial error
    limit; raises SshError for a connection that failed, returns anything else."""
    creds = _credentials(connection)
    limit = int(connection.get("dial_error_limit") or DEFAULT_DIAL_ERROR_LIMIT)
    per_dial = int(connection.get("per_dial_timeout_s") or DEFAULT_PER_DIAL_TIMEOUT_S)
    attempt = 0
    while True:
        attempt += 1
        proc = subprocess.run(
            argv,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode != _SSH_FAILED:
            return proc
        failure = _failure(connection, creds, proc.stderr or "")
        if failure is None:
            return proc
        kind, text = failure
        if kind == "fatal":
            raise SshError(_scrub(text, _secret_values(creds)))
        if limit != -1 and attempt >= limit:
            raise SshError(
                _scrub(
                    f"{_who(connection, None)}: unreachable after {attempt} "
                    f"dial{'s' if attempt > 1 else ''} of up to {per_dial} s ({text})",
                    _secret_values(creds),
                )
            )
        time.sleep(min(_BACKOFF_FIRST_S * 2 ** (attempt - 1), _BACKOFF_MAX_S))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _control(connection: Mapping[str, Any], config: Path, command: str) -> bool:
    """`ssh -O COMMAND` to the login's master connection (its local socket, no
    network); whether the master answered."""
    proc = subprocess.run(
        ssh_argv(connection, config, "-O", command),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.returncode == 0


def _master_up(connection: Mapping[str, Any], config: Path) -> bool:
    """Whether a master connection answers on its socket."""
    return _control(connection, config, "check")


def _ensure_master(connection: Mapping[str, Any], config: Path, prefix: Path) -> None:
    """Starts the host's master connection unless one is up. Scripts on one host
    often start together: the lock makes them wait for one handshake instead of
    each opening its own connection."""
    if _master_up(connection, config):
        return
    with _locked(prefix.with_name(prefix.name + ".lock")):
        if _master_up(connection, config):
            return
        # The first client becomes the master (ControlMaster auto), and with
        # ControlPersist stays in the background for the runs that follow,
        # until CONTROL_PERSIST_S after the last (a `-N` master would never leave).
        per_dial = int(connection.get("per_dial_timeout_s") or DEFAULT_PER_DIAL_TIMEOUT_S)
        proc = _dial(connection, [*ssh_argv(connection, config), "true"], None, per_dial * 4)
        if proc.returncode != 0:
            creds = _credentials(connection)
            lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
            raise SshError(
                _scrub(
                    f"{_who(connection, None)}: ssh failed (exit {proc.returncode}): "
                    f"{lines[-1] if lines else 'no output'}",
                    _secret_values(creds),
                )
            )


def run_ssh(
    connection: Mapping[str, Any], remote: list[str], stdin: str, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """Runs `remote` (argv, quoted for the login shell) on the connection's host
    with `stdin`; `connection` is Connection.to_inputs() plus `credentials`."""
    with _client_files(connection) as (config, prefix):
        _ensure_master(connection, config, prefix)
        command = " ".join(shlex.quote(word) for word in remote)
        return _dial(connection, [*ssh_argv(connection, config), command], stdin, timeout_s)


def master_running(connection: Mapping[str, Any]) -> bool:
    """Whether this login's master connection to the host is up."""
    with _client_files(connection) as (config, _):
        return _master_up(connection, config)


def close_master(connection: Mapping[str, Any]) -> bool:
    """Asks this login's master connection to exit (`ssh -O exit`); False if none was up.
    A proxy hop's own master is left to expire (CONTROL_PERSIST_S)."""
    with _client_files(connection) as (config, _):
        return _control(connection, config, "exit")


# Inputs whose change re-runs the script (an update) ...
# Scripts an older dbfleet ran whose resources a newer one no longer declares, and
# whose delete has nothing to undo: the primary fence (pg_fence.sh) only ever
# checked and stopped nodes, which Patroni now runs. Deleting such a resource from
# a deployed stack is then a no-op instead of a failure on the missing script.
RETIRED_SCRIPTS = frozenset({"pg_fence.sh"})

_UPDATE_ON = ("connection", "script", "script_sha", "environment", "secret_environment")
# ... and those whose change replaces the resource (delete, then create).
_REPLACE_ON = ("connection", "name")
# What of a connection is the host's identity, compared for both: how it is
# reached (proxy, dial settings) and with which key (`credentials`, not compared
# at all) may change without touching what runs there.
_CONNECTION_IDENTITY = ("kind", "host", "user", "port")


def _identity(props: Mapping[str, Any]) -> dict[str, Any]:
    conn = props.get("connection") or {}
    return {k: conn.get(k) for k in _CONNECTION_IDENTITY}


def _with_credentials(props: Mapping[str, Any]) -> dict[str, Any]:
    """The connection run_script takes: for ssh, with the resource's credentials."""
    conn = dict(props["connection"])
    if conn.get("kind") == "ssh":
        conn["credentials"] = props.get("credentials")
    return conn


def _secrets_of(props: Mapping[str, Any]) -> dict[str, str]:
    """Every secret value of a resource, to scrub from error text."""
    found = dict(props.get("secret_environment") or {})
    creds = props.get("credentials")
    if isinstance(creds, Mapping):
        found.update(_secret_values({k: v for k, v in creds.items() if isinstance(v, str)}))
    return found


class HostScriptProvider(ResourceProvider):
    """Create/update/delete a HostScript by running its script with that action."""

    def _run(self, props: dict[str, Any], action: str) -> str:
        secrets = _secrets_of(props)
        try:
            proc = run_script(
                _with_credentials(props),
                props["script"],
                action,
                dict(props.get("environment") or {}),
                dict(props.get("secret_environment") or {}),
                int(props.get("timeout_s") or DEFAULT_TIMEOUT_S),
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"{props['script']} {action} timed out after {exc.timeout} s"
            ) from None
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
            # The script's last line says why it stopped (`die`): lead with it,
            # then the lines before it for context.
            cause = lines[-1] if lines else "no output"
            context = "\n".join(lines[-15:-1])
            raise RuntimeError(
                _scrub(
                    f"{props['script']} {action} failed (exit {proc.returncode}): {cause}"
                    + (f"\n{context}" if context else ""),
                    secrets,
                )
            )
        return _scrub(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "", secrets)

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        if news.get("script") and not (SCRIPTS_DIR / news["script"]).is_file():
            failures.append(
                pulumi.dynamic.CheckFailure("script", f"unknown host script {news['script']}")
            )
        conn = news.get("connection") or {}
        if conn.get("kind") == "ssh" and not news.get("credentials"):
            failures.append(
                pulumi.dynamic.CheckFailure(
                    "credentials",
                    f"ssh host {conn.get('host')}: no credentials (private_key, known_hosts)",
                )
            )
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        summary = self._run(props, "create")
        return CreateResult(
            id_=f"{props['connection']['host']}:{props['name']}", outs={**props, "summary": summary}
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Whether to run the script again, and whether that must be a replacement.

        A replacement deletes first (the script's `delete` removes what the old
        inputs made, e.g. a data directory), so it is planned only for what is
        the resource's identity: its host (`connection`), its `name`, and the
        environment variables listed in `replace_on_env` (a node's NODE_DIR).
        Every other change is an update (the idempotent `create` again). With
        nothing changed, a `check_drift` resource asks its host (`check`): a
        drifted host is an update too. Only the keys named here are compared,
        so a key that an older HostScript stored in state (and that no longer
        exists) never causes a change.
        """

        def differs(key: str) -> bool:
            if key == "connection":
                return _identity(olds) != _identity(news)
            return olds.get(key) != news.get(key)

        changed = [k for k in _UPDATE_ON if differs(k)]
        replaces = [k for k in _REPLACE_ON if differs(k)]
        if not replaces:
            old_env = olds.get("environment") or {}
            new_env = news.get("environment") or {}
            if any(old_env.get(k) != new_env.get(k) for k in news.get("replace_on_env", [])):
                replaces = ["environment"]
        # The host is asked with today's credentials (a rotated key or pin), when known.
        current = news.get("credentials")
        if isinstance(current, Mapping):
            olds = {**olds, "credentials": current}
        if not changed and news.get("check_drift") and self._drifted(olds):
            changed = ["drift"]
        return DiffResult(
            changes=bool(changed or replaces),
            replaces=replaces,
            delete_before_replace=True,
        )

    def _drifted(self, props: dict[str, Any]) -> bool:
        try:
            proc = run_script(
                _with_credentials(props),
                props["script"],
                "check",
                dict(props.get("environment") or {}),
                dict(props.get("secret_environment") or {}),
                timeout_s=30,
            )
        except (subprocess.TimeoutExpired, OSError):
            return True
        return proc.returncode == DRIFT_EXIT_CODE

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        summary = self._run(news, "update")
        return UpdateResult(outs={**news, "summary": summary})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if props.get("script") in RETIRED_SCRIPTS:
            # Declared by an older dbfleet; nothing of it is left to undo (see
            # RETIRED_SCRIPTS), and its text is no longer shipped.
            return
        self._run(props, "delete")

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)


class HostScript(pulumi.dynamic.Resource):
    """Runs components/scripts/<script> on a host; secrets only through the environment.

    An ssh connection's credentials become the resource's `credentials` input:
    stored as a secret, given to the ssh client only, never to the host.
    """

    summary: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        connection: Connection,
        script: str,
        environment: pulumi.Input[dict[str, pulumi.Input[str]]] | None = None,
        secret_environment: pulumi.Input[dict[str, pulumi.Input[str]]] | None = None,
        replace_on_env: list[str] | None = None,
        check_drift: bool = False,
        timeout_s: int = DEFAULT_TIMEOUT_S,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        credentials = connection.credentials
        if connection.kind == "ssh" and credentials is None:
            raise ValueError(f"{name}: ssh host {connection.host} has no credentials")
        # A local resource has no `credentials` input at all: the inputs and
        # options of deployed local stacks stay exactly as they were.
        extra = {} if credentials is None else {"credentials": pulumi.Output.secret(credentials)}
        secret_opts = pulumi.ResourceOptions(
            additional_secret_outputs=["secret_environment", *extra]
        )
        super().__init__(
            HostScriptProvider(),
            name,
            {
                **extra,
                "name": name,
                "connection": connection.to_inputs(),
                "script": script,
                "script_sha": script_digest(script),
                "environment": environment or {},
                "secret_environment": pulumi.Output.secret(secret_environment or {}),
                "replace_on_env": replace_on_env or [],
                "check_drift": check_drift,
                "timeout_s": timeout_s,
                "summary": None,
            },
            pulumi.ResourceOptions.merge(secret_opts, opts),
        )
