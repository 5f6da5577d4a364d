"""`dbfleet backup GROUP` and `dbfleet restore GROUP`: a group's pgBackRest backups, on demand.

The group's stanza, repository and scheduler are declared by its replicas stack
(components/backup.py); these commands only ask them, through the host script
`pgbackrest_ops.sh` (run as the group's OS user on the local target, and on the ssh
target over ssh on the repository's host; it reads the configuration pgbackrest.sh
wrote, so no secret passes through here):

- `backup GROUP [--type full|diff|incr]` takes one backup now, on whichever node leads
  (pgBackRest finds it);
- `restore GROUP --to TIMESTAMP | --to-lsn LSN | --latest [--yes]` is a point-in-time
  recovery of the whole group: it refuses a point before the oldest backup (naming the
  earliest possible time), says what will be thrown away, asks (refuses without --yes
  when stdin is not a terminal), then stops writes, restores the preferred leader's
  node to that point, clears Patroni's state and the replicas, and runs `dbfleet up`
  of the group's replicas layer: Patroni takes the restored data directory as the
  group's leader and clones every replica from it. It ends by writing through every
  region's write endpoint (`dbfleet prove`). On the ssh target the same steps run
  one host at a time (`ssh_steps`), each over ssh on the host of the nodes it touches;
  `--into` is refused there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dbfleet.ops.commands import (
    Abort,
    fleet_groups,
    group_access,
    group_vault,
    guard,
    load_fleet_file,
)
from dbfleet.ops.results import ExitCode

OPS_SCRIPT = "pgbackrest_ops.sh"
BACKUP_TYPES = ("full", "diff", "incr")
_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
RESTORE_TIMEOUT_S = 3600
LOCAL = {"kind": "local", "host": "localhost", "user": "", "port": 22}


@dataclass(frozen=True)
class Target:
    """A restore target: `kind` time | lsn | latest; `value` as pgBackRest takes it."""

    kind: str
    value: str = ""
    when: dt.datetime | None = None
    lsn: int | None = None


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def parse_target(to: str | None, to_lsn: str | None, latest: bool) -> Target:
    """The one restore target the command line names (argparse makes them exclusive)."""
    if latest:
        return Target("latest")
    if to_lsn is not None:
        if not _LSN.match(to_lsn):
            raise Abort(f"restore: --to-lsn {to_lsn!r} is not an LSN like 0/3000060")
        return Target("lsn", to_lsn.upper(), lsn=parse_lsn(to_lsn))
    if to is None:
        raise Abort("restore: name a point: --to TIMESTAMP, --to-lsn LSN or --latest")
    try:
        when = dt.datetime.fromisoformat(to)
    except ValueError:
        raise Abort(
            f"restore: --to {to!r} is not a timestamp like 2024-05-01T12:30:00+00:00"
        ) from None
    if when.tzinfo is None:
        # The servers' time zone is not the operator's: a time without one is ambiguous.
        raise Abort(f"restore: --to {to!r} has no time zone; add one, e.g. {to}+00:00 or {to}Z")
    return Target("time", when.isoformat(sep=" "), when=when)


def backups_of(info: Mapping[str, Any]) -> list[dict]:
    """The stanza's backups from `{"info": <pgbackrest info json>, ...}`, oldest first."""
    stanzas = info.get("info") or []
    found = list(stanzas[0].get("backup") or []) if stanzas else []
    return sorted(found, key=lambda b: b["timestamp"]["stop"])


def earliest(info: Mapping[str, Any]) -> tuple[dt.datetime, int] | None:
    """The earliest point a restore can reach: the end of the oldest backup (time, LSN)."""
    found = backups_of(info)
    if not found:
        return None
    oldest = found[0]
    when = dt.datetime.fromtimestamp(oldest["timestamp"]["stop"], tz=dt.UTC)
    return when, parse_lsn(oldest["lsn"]["stop"])


def refusal(target: Target, info: Mapping[str, Any], now: dt.datetime) -> str | None:
    """Why `target` cannot be restored to (None: it can)."""
    first = earliest(info)
    if first is None:
        return "the group has no backup yet: take one with `dbfleet backup GROUP`"
    when, lsn = first
    stamp = when.isoformat(timespec="seconds")
    if target.kind == "time" and target.when is not None:
        if target.when < when:
            return f"{target.when.isoformat()} is before the oldest backup; the earliest possible time is {stamp}"
        if target.when > now:
            return (
                f"{target.when.isoformat()} is in the future; use --latest for everything archived"
            )
    if target.kind == "lsn" and target.lsn is not None and target.lsn < lsn:
        return f"LSN {target.value} is before the oldest backup, which ends at {first_lsn(info)} ({stamp})"
    return None


def first_lsn(info: Mapping[str, Any]) -> str:
    found = backups_of(info)
    return found[0]["lsn"]["stop"] if found else "?"


# -- talking to the host -------------------------------------------------------------------
Runner = Callable[[str, dict[str, str], int], tuple[int, str, str]]


# Where base_env says the repository is on the ssh target; run_ops takes them out of the
# script's environment again (they are for the connection, not for the host).
_SSH_HOST, _SSH_PORT = "DBFLEET_REPO_SSH_HOST", "DBFLEET_REPO_SSH_PORT"


def ssh_connection(host: str, port: int) -> dict[str, Any]:
    """The connection to the repository's host on the ssh target: the fleet file's
    login, its key and pinned host keys read from Vault (as `dbfleet up` does)."""
    from components.hostcmd import Connection
    from dbfleet import vault

    fleet = load_fleet_file(deployed=False)
    ssh = fleet.ssh
    if ssh is None:
        raise Abort("the fleet file has no ssh section: the repository's host cannot be reached")
    login = vault.read_ssh_login(vault.client_from_env(), vault.DEFAULT_MOUNT, ssh.key)
    conn = Connection(
        kind="ssh",
        host=host,
        port=port,
        user=ssh.user,
        proxy=ssh.proxy,
        dial_error_limit=ssh.dial_error_limit,
        per_dial_timeout_s=ssh.per_dial_timeout_s,
    ).to_inputs()
    return {**conn, "credentials": {**login, "vault_path": ssh.key}}


def run_ops(
    action: str, env: dict[str, str], timeout_s: int = 600, secret_env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    from components.hostcmd import run_script

    env = dict(env)
    host, port = env.pop(_SSH_HOST, None), env.pop(_SSH_PORT, None)
    conn = dict(LOCAL) if host is None else ssh_connection(host, int(port or 22))
    proc = run_script(conn, OPS_SCRIPT, action, env, secret_env or {}, timeout_s)
    return proc.returncode, proc.stdout, proc.stderr


def facts_of(group: str, reps: Mapping[str, Any] | None) -> dict:
    """The `backup` output of the group's replicas stack; Abort when there is none."""
    if not reps or not reps.get("nodes"):
        raise Abort(f"replicas-{group} is not deployed: run dbfleet up {group}")
    facts = reps.get("backup")
    if not facts:
        raise Abort(
            f"group {group} has no backups: on the ssh target a group needs `backup:` in the "
            "fleet file (docs/backups.md), or its replicas stack predates them (run dbfleet up)"
        )
    return dict(facts)


def base_env(facts: Mapping[str, Any], fleet: str) -> dict[str, str]:
    env = {
        "RUN_AS": str(facts["user"]),
        "BACKUP_DIR": str(facts["dir"]),
        "STANZA": str(facts["stanza"]),
        "FLEET_NAME": fleet,
    }
    ssh = facts.get("repo_ssh")
    if isinstance(ssh, Mapping):
        env[_SSH_HOST], env[_SSH_PORT] = str(ssh["host"]), str(ssh.get("port") or 22)
    return env


def read_info(env: dict[str, str], runner: Runner = run_ops) -> dict:
    code, out, err = runner("info", env, 120)
    if code != 0:
        raise Abort(f"pgbackrest info failed: {' '.join(err.split())[-300:]}")
    return json.loads(out)


# -- backup --------------------------------------------------------------------------------
def _replicas(group: str) -> dict | None:
    from dbfleet.ops import rollout

    return rollout.stack_outputs(f"replicas-{group}")


def cmd_backup(args: argparse.Namespace) -> int:
    fleet = load_fleet_file()
    (group,) = fleet_groups([args.group], fleet=fleet)
    group_access(fleet, [group], "status")
    env = base_env(facts_of(group, _replicas(group)), fleet.name)
    t0 = time.monotonic()
    code, _out, err = run_ops("backup", {**env, "BACKUP_TYPE": args.type}, 3600)
    if code != 0:
        raise Abort(f"backup: {' '.join(err.split())[-400:]}")
    newest = backups_of(read_info(env))[-1]
    size = newest["info"]["repository"].get("delta") or newest["info"]["repository"].get("size")
    print(
        f"backup: {newest['label']} ({newest['type']}) of group {group} in "
        f"{time.monotonic() - t0:.1f} s, {size} bytes in the repository"
    )
    return ExitCode.OK


# -- restore -------------------------------------------------------------------------------
def _leader(reps: Mapping[str, Any]) -> tuple[str | None, str, int]:
    """(live leader's member name or None, its region, its port)."""
    from dbfleet.ops import status

    nodes = status.group_nodes("", reps)
    endpoints = [(n.name, n.host, n.rest_port) for n in nodes if n.rest_port]
    from concurrent.futures import ThreadPoolExecutor

    try:
        context = status.tls_context(reps.get("ca_certificate"))
    except ValueError as exc:
        raise Abort(f"restore: cannot ask Patroni who leads: {exc}") from None
    with ThreadPoolExecutor(max_workers=max(1, len(endpoints))) as pool:
        doc, _ = status.read_cluster(endpoints, pool, context)
    lead = status.cluster_leader(doc or {})
    if not lead:
        return None, "", 0
    node = next(n for n in nodes if n.name == lead["name"])
    return node.name, node.region, node.port


def members_of(facts: Mapping[str, Any], reps: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """Every node of the group as (member name, node directory, port), the preferred
    leader's (the primary region's first node, which `up` starts first) first."""
    root = facts["data_root"]
    primary = reps["primary_region"]
    found = []
    for region in [primary, *sorted(r for r in reps["nodes"] if r != primary)]:
        for k, m in enumerate(reps["nodes"][region].get("members") or [reps["nodes"][region]]):
            found.append((f"{region}-{k}", f"{root}/{region}-{k}", int(m["port"])))
    return found


def _target_env(
    facts: Mapping[str, Any], reps: Mapping[str, Any], target: Target
) -> dict[str, str]:
    _name, d, port = members_of(facts, reps)[0]
    return {
        "TARGET_DIR": d,
        "TARGET_PORT": str(port),
        "ETCD_ENDPOINTS": ",".join(
            f"https://{e}" for e in sorted((reps.get("etcd") or {}).values())
        ),
        "SCOPE": str(facts["stanza"]),
        "RESTORE_TYPE": target.kind,
        "RESTORE_TARGET": target.value,
    }


def restore_env(
    facts: Mapping[str, Any], reps: Mapping[str, Any], fleet: str, target: Target
) -> dict[str, str]:
    """pgbackrest_ops.sh's restore environment: every node, the preferred leader's
    node as the one restored into (it is the node `up` starts first)."""
    return {
        **base_env(facts, fleet),
        "NODE_DIRS": " ".join(d for _n, d, _p in members_of(facts, reps)),
        **_target_env(facts, reps, target),
    }


@dataclass(frozen=True)
class Step:
    """One restore step of the ssh target: pgbackrest_ops.sh `action` on `host`
    (the member names on it, for messages) with `env` (its connection inside)."""

    action: str
    host: str
    env: dict[str, str]


def ssh_steps(
    facts: Mapping[str, Any],
    reps: Mapping[str, Any],
    fleet: str,
    logins: Mapping[str, tuple[str, int]],
    target: Target,
    leader: tuple[str, int] | None,
) -> list[Step]:
    """The restore on the ssh target, one host at a time (docs/backups.md): each step
    runs pgbackrest_ops.sh on the host of the nodes it touches, with that host's own
    pgBackRest directory (its configuration reaches the repository host over TLS).
    `logins`: member name -> (ssh address, port); `leader`: (member name, port)."""
    members = members_of(facts, reps)
    missing = [n for n, _d, _p in members if n not in logins]
    if missing:
        raise Abort(
            f"restore: the fleet file names no host for {', '.join(missing)}: "
            "restore the group with the fleet file it was deployed with"
        )
    root = facts["data_root"]
    base = base_env(facts, fleet)

    def on(login: tuple[str, int], name: str, **env: str) -> dict[str, str]:
        # that host's own pgBackRest directory (docs/backups.md, the ssh target)
        return {
            **base,
            "BACKUP_DIR": f"{root}/pgbackrest/{name}",
            _SSH_HOST: login[0],
            _SSH_PORT: str(login[1]),
            **env,
        }

    hosts: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for name, d, _port in members:
        hosts.setdefault(tuple(logins[name]), []).append((name, d))
    lead = leader[0] if leader else None
    lead_dir = f"{root}/{lead}" if lead else ""

    def label(login: tuple[str, int]) -> str:
        return f"{'+'.join(n for n, _ in hosts[login])} ({login[0]})"

    steps: list[Step] = []
    # 1. Writes stop on the leader's host and its WAL reaches the repository (or,
    # with no leader, the repository host checks that archiving works at all).
    if leader and lead:
        steps.append(
            Step(
                "restore-fence",
                label(tuple(logins[lead])),
                on(logins[lead], lead, LEADER_DIR=lead_dir, LEADER_PORT=str(leader[1])),
            )
        )
    else:
        steps.append(Step("restore-fence", f"the repository host ({base[_SSH_HOST]})", dict(base)))
    # 2. Patroni stops on every host, the leader's last.
    order = sorted(hosts, key=lambda h: any(n == lead for n, _ in hosts[h]))
    for login in order:
        first = hosts[login][0][0]
        env = on(login, first, NODE_DIRS=" ".join(d for _n, d in hosts[login]))
        if any(n == lead for n, _ in hosts[login]):
            env["LEADER_DIR"] = lead_dir
        steps.append(Step("restore-stop", label(login), env))
    # 3-5a. The restore, recovery and etcd's state on the preferred leader's host.
    name0 = members[0][0]
    steps.append(
        Step(
            "restore-node",
            label(tuple(logins[name0])),
            on(logins[name0], name0, **_target_env(facts, reps, target)),
        )
    )
    # 5b. Every other node emptied, on its own host.
    for login, nodes in hosts.items():
        others = [(n, d) for n, d in nodes if n != name0]
        if others:
            env = on(login, others[0][0], NODE_DIRS=" ".join(d for _n, d in others))
            steps.append(Step("restore-clear", label(login), env))
    return steps


def fleet_logins(fleet, group: str) -> dict[str, tuple[str, int]]:
    """member name -> (ssh address, port), from the fleet file's hosts as `up` uses them."""
    found = {}
    for region, spec in fleet.groups[group].regions.items():
        for k, host in enumerate(spec.hosts or []):
            found[f"{region}-{k}"] = (host.address, int(host.port))
    return found


def run_ssh_steps(steps: list[Step], runner: Runner = run_ops) -> None:
    """Runs the steps in order; the first failure aborts, saying what state it leaves."""
    for i, step in enumerate(steps):
        print(f"restore: {step.action} on {step.host}", flush=True)
        try:
            code, out, err = runner(step.action, step.env, RESTORE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 — SshError and friends: name the host
            code, out, err = 1, "", f"{type(exc).__name__}: {exc}\n"
        sys.stderr.write(err)
        if code != 0:
            if i == 0:
                raise Abort(f"restore: refused on {step.host} (see above); nothing changed")
            raise Abort(
                f"restore: {step.action} failed on {step.host} (see above); the group is "
                "stopped: run the restore again, or dbfleet up GROUP to start it as it is"
            )
        if out.strip():
            print(out.strip(), flush=True)


def loss_text(target: Target, group: str, regions: list[str]) -> list[str]:
    point = {
        "time": f"committed after {target.value}",
        "lsn": f"after LSN {target.value}",
        "latest": "not yet archived when writes stop (normally nothing: the current WAL is archived first)",
    }[target.kind]
    return [
        f"restore: group {group} ({', '.join(regions)}) goes back to "
        + ("the newest archived point" if target.kind == "latest" else target.value),
        f"restore: thrown away: every transaction {point}, in every region",
        (
            "restore: writes stop now; every node restarts; the replicas are rebuilt from the "
            "restored leader (their data directories are emptied)"
        ),
    ]


def confirm(group: str, assume_yes: bool, stdin=None) -> None:
    stdin = stdin or sys.stdin
    if assume_yes:
        return
    if not stdin.isatty():
        raise Abort("restore: refusing without --yes: stdin is not a terminal")
    print(f"restore: type the group's name ({group}) to go on: ", end="", flush=True)
    if stdin.readline().strip() != group:
        raise Abort("restore: not confirmed; nothing changed")


def cmd_restore(args: argparse.Namespace) -> int:
    fleet = load_fleet_file()
    (group,) = fleet_groups([args.group], fleet=fleet)
    if args.into:
        into_refusal(fleet, group, args.into, None)
        # GROUP is only read; NEWGROUP is brought up.
        group_access(fleet, [group], "status")
        providers = group_vault(fleet, fleet_groups([args.into], fleet=fleet), "up")
    else:
        providers = group_vault(fleet, [group], "up")
    target = parse_target(args.to, args.to_lsn, args.latest)
    reps = _replicas(group)
    facts = facts_of(group, reps)
    assert reps is not None
    on_ssh = facts.get("target") == "ssh"
    env = base_env(facts, fleet.name)
    if args.into:
        into_refusal(fleet, group, args.into, _replicas(args.into))
    why = refusal(target, read_info(env), dt.datetime.now(dt.UTC))
    if why:
        raise Abort(f"restore: refused: {why}")
    if args.into:
        return restore_into(fleet, group, args.into, target, env, providers, reps["app_user"])
    for line in loss_text(target, group, list(reps["nodes"])):
        print(line, flush=True)
    confirm(group, args.yes)
    t0 = time.monotonic()
    leader, _region, port = _leader(reps)
    if on_ssh:
        logins = fleet_logins(fleet, group)
        run_ssh_steps(
            ssh_steps(facts, reps, fleet.name, logins, target, (leader, port) if leader else None)
        )
    else:
        renv = restore_env(facts, reps, fleet.name, target)
        if leader:
            renv["LEADER_DIR"] = f"{facts['data_root']}/{leader}"
            renv["LEADER_PORT"] = str(port)
        code, out, err = run_ops("restore", renv, RESTORE_TIMEOUT_S)
        sys.stderr.write(err)
        if code != 0:
            raise Abort("restore: failed (see above)")
        print(out.strip(), flush=True)
    print(f"restore: starting Patroni again: dbfleet up {group} --layer replicas", flush=True)
    from dbfleet.ops import report, rollout

    results = rollout.flat(
        rollout.run(
            [group],
            "up",
            layers=["replicas"],
            options=rollout.RunOptions(secrets_providers=dict(providers)),
        )
    )
    if report.exit_code(results, preview=False) != 0:
        sys.stdout.write(report.table(results) + "\n")
        raise Abort(f"restore: the data is restored but `dbfleet up {group}` failed (above)")
    from dbfleet.ops.commands import prove

    problems = prove([group], deadline_s=30.0)
    if problems:
        raise Abort("restore: writes do not work yet: " + "; ".join(problems))
    print(
        f"restore: group {group} restored and writable in every region in "
        f"{time.monotonic() - t0:.1f} s",
        flush=True,
    )
    return ExitCode.OK


# -- restore --into NEWGROUP ---------------------------------------------------------------
def into_refusal(fleet, group: str, into: str, into_reps: Mapping[str, Any] | None) -> None:
    """Abort unless `group` and `into` are on the local target, `into` is a group of
    the fleet file, in `group`'s zone, and never deployed (no nodes): restoring into it must not
    overwrite anything and must keep the data in its zone."""
    if into == group:
        raise Abort(f"restore: --into {into} is the group itself; restore {group} without --into")
    if fleet.group_target(group) != "local":
        raise Abort(
            "restore: --into is not on the ssh target yet: the new group's hosts would read "
            f"{group}'s repository, whose TLS server admits only {group}'s own hosts "
            "(docs/backups.md); restore in place (without --into)"
        )
    if into not in fleet.groups:
        raise Abort(
            f"restore: --into {into}: no such group in the fleet file; add it (same zone as "
            f"{group}: {fleet.groups[group].zone}, regions of its own) and run the restore again"
        )
    src, dst = fleet.groups[group], fleet.groups[into]
    if dst.zone != src.zone:
        raise Abort(
            f"restore: --into {into}: its zone {dst.zone} is not {group}'s zone {src.zone}; "
            "a group's data stays in its zone"
        )
    if fleet.group_target(into) != "local":
        raise Abort(f"restore: --into {into}: restore --into runs on the local target only for now")
    if into_reps and into_reps.get("nodes"):
        raise Abort(
            f"restore: --into {into}: group {into} is deployed already; --into needs a fresh "
            f"group (dbfleet destroy {into} first)"
        )


def roles_sql(secrets: Mapping[str, str], app_user: str) -> str:
    """The new group's role passwords as SCRAM verifiers (components/scram.py): its
    Patroni, replicas and applications then log in with its own passwords."""
    from components import scram

    if not re.fullmatch(r"[a-z_][a-z0-9_]*", app_user):
        raise Abort(f"restore: application user {app_user!r} is not a plain role name")
    pairs = (
        ("postgres", "superuser_password"),
        ("replicator", "replication_password"),
        (app_user, "app_password"),
    )
    return "".join(
        f"ALTER ROLE \"{role}\" PASSWORD '{scram.new_verifier(secrets[key])}';\n"
        for role, key in pairs
    )


def _up(groups: list[str], layers: list[str] | None, providers: Mapping[str, str]) -> None:
    from dbfleet.ops import report, rollout

    results = rollout.flat(
        rollout.run(
            groups,
            "up",
            layers=layers,
            options=rollout.RunOptions(secrets_providers=dict(providers)),
        )
    )
    if report.exit_code(results, preview=False) != 0:
        sys.stdout.write(report.table(results) + "\n")
        raise Abort(f"restore: `dbfleet up {' '.join(groups)}` failed (above)")


def restore_into(
    fleet,
    group: str,
    into: str,
    target: Target,
    env: dict[str, str],
    providers: dict[str, str],
    app_user: str,
) -> int:
    """`group`'s backups restored into the fresh group `into`: its accounts and
    networks come up, the backup is recovered as `group`'s user in a staging
    directory and handed to `into`'s preferred leader, then the rest of `into` comes
    up around it. `group` itself is only read."""
    from dbfleet import vault
    from dbfleet.ops import rollout

    point = "the newest archived point" if target.kind == "latest" else target.value
    print(
        f"restore: group {group} stays as it is; new group {into} "
        f"({', '.join(fleet.groups[into].regions)}) starts from {group}'s backups at {point}",
        flush=True,
    )
    t0 = time.monotonic()
    _up([into], ["accounts", "networks"], providers)
    accounts = rollout.stack_outputs(f"accounts-{into}") or {}
    nets = rollout.stack_outputs(f"networks-{into}") or {}
    primary = fleet.groups[into].primary
    secrets = vault.read_group_secrets(
        vault.client_from_env(), accounts["secret_mount"], accounts["secret_path"]
    )
    renv = {
        **env,
        "INTO_NODE_DIR": f"{accounts['data_root']}/{primary}-0",
        "INTO_USER": str(accounts["user"]),
        "INTO_PORT": str(int(nets["regions"][primary]["node_ports"][0])),
        "RESTORE_TYPE": target.kind,
        "RESTORE_TARGET": target.value,
    }
    # The same program makes both groups: the restored data has the role `into` will use.
    secret_env = {"INTO_ROLES_SQL": roles_sql(secrets, app_user)}
    code, out, err = run_ops("restore-into", renv, RESTORE_TIMEOUT_S, secret_env)
    sys.stderr.write(err)
    if code != 0:
        raise Abort(f"restore: failed (see above); group {group} is unchanged")
    print(out.strip(), flush=True)
    print(f"restore: bringing the rest of {into} up around it: dbfleet up {into}", flush=True)
    _up([into], None, providers)
    from dbfleet.ops.commands import prove

    problems = prove([into], deadline_s=30.0)
    if problems:
        raise Abort(f"restore: {into} does not take writes yet: " + "; ".join(problems))
    print(
        f"restore: group {into} holds {group}'s data at {point}, writable in every region, in "
        f"{time.monotonic() - t0:.1f} s; {group} untouched (dbfleet destroy {into} when done)",
        flush=True,
    )
    return ExitCode.OK


def register(commands) -> None:
    p = commands.add_parser(
        "backup",
        help="take a backup of a group now (pgBackRest, on its leader)",
        description="Take one backup of the group now, on whichever node leads. The "
        "scheduler takes them on its own (docs/backups.md); this is for before a risky change.",
    )
    p.add_argument("group", metavar="GROUP")
    p.add_argument("--type", choices=BACKUP_TYPES, default="full", help="default: full")
    p.set_defaults(handler=guard(cmd_backup, engine=True))

    p = commands.add_parser(
        "restore",
        help="point-in-time recovery of a whole group (asks first)",
        description="Restore the group to a point in time: stop writes, restore its "
        "preferred leader from the backups and archived WAL, rebuild its replicas from it. "
        "Everything after the point is thrown away. Asks first; without a terminal --yes "
        "is required.",
    )
    p.add_argument("group", metavar="GROUP")
    point = p.add_mutually_exclusive_group(required=True)
    point.add_argument("--to", metavar="TIMESTAMP", help="ISO 8601 with a time zone")
    point.add_argument("--to-lsn", metavar="LSN", help="a WAL position, e.g. 0/3000060")
    point.add_argument("--latest", action="store_true", help="everything archived")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--into",
        metavar="NEWGROUP",
        help="restore into a fresh group of the same zone (declared in the fleet file, never "
        "deployed) and leave GROUP untouched",
    )
    p.set_defaults(handler=guard(cmd_restore, engine=True))
