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
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Connection:
    """Where a host script runs: this machine, or a host reached over SSH."""

    kind: Literal["local", "ssh"] = "local"
    host: str = "localhost"
    user: str | None = None
    port: int = 22

    def to_inputs(self) -> dict[str, Any]:
        return {"kind": self.kind, "host": self.host, "user": self.user or "", "port": self.port}


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
    """Runs `script action` on the connection's host; returns the finished process."""
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
    # SSH: the environment, secrets included, is sent as `export` lines on stdin.
    preamble = "".join(
        f"export {k}={shlex.quote(v)}\n" for k, v in {**environment, **secret_environment}.items()
    )
    target = (
        connection["host"]
        if not connection.get("user")
        else f"{connection['user']}@{connection['host']}"
    )
    argv = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-p",
        str(connection.get("port", 22)),
    ]
    key = secret_environment.get("DBFLEET_SSH_PRIVATE_KEY")
    with tempfile.TemporaryDirectory() as tmp:
        if key:
            key_file = Path(tmp) / "id"
            key_file.touch(mode=0o600)
            key_file.write_text(key)
            argv += ["-i", str(key_file)]
        argv += [target, "bash", "-s", "--", action]
        return subprocess.run(
            argv,
            input=preamble + program,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


# Inputs whose change re-runs the script (an update) ...
_UPDATE_ON = ("connection", "script", "script_sha", "environment", "secret_environment")
# ... and those whose change replaces the resource (delete, then create).
_REPLACE_ON = ("connection", "name")


class HostScriptProvider(ResourceProvider):
    """Create/update/delete a HostScript by running its script with that action."""

    def _run(self, props: dict[str, Any], action: str) -> str:
        secrets = dict(props.get("secret_environment") or {})
        try:
            proc = run_script(
                props["connection"],
                props["script"],
                action,
                dict(props.get("environment") or {}),
                secrets,
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
        changed = [k for k in _UPDATE_ON if olds.get(k) != news.get(k)]
        replaces = [k for k in _REPLACE_ON if olds.get(k) != news.get(k)]
        if not replaces:
            old_env = olds.get("environment") or {}
            new_env = news.get("environment") or {}
            if any(old_env.get(k) != new_env.get(k) for k in news.get("replace_on_env", [])):
                replaces = ["environment"]
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
                props["connection"],
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
        self._run(props, "delete")

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)


class HostScript(pulumi.dynamic.Resource):
    """Runs components/scripts/<script> on a host; secrets only through the environment."""

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
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["secret_environment"])
        super().__init__(
            HostScriptProvider(),
            name,
            {
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
