"""`dbfleet failover GROUP`: restore writes after a group's primary region is lost.

The operator path for an unplanned failover: pick the most up-to-date replica
(the highest WAL position it has received), make it the group's primary in the
fleet file, and run the replicas and proxies layers. The replicas layer fences the
old primary, promotes the chosen node and re-points every other node — the old
primary too, which rejoins as a replica (rewound if it had diverged) when it is
back, so there is never a second primary.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dbfleet import vault
from dbfleet.model.spec import FleetError, default_spec_path, load_fleet
from dbfleet.ops.commands import fleet_groups, guard, load_fleet_file
from dbfleet.ops.results import ExitCode, Status


@dataclass(frozen=True)
class NodeState:
    region: str
    host: str
    port: int
    reachable: bool
    in_recovery: bool | None = None
    received_lsn: int | None = None
    error: str = ""


def parse_lsn(text: str | None) -> int | None:
    if not text:
        return None
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def probe(region: str, host: str, port: int, password: str, timeout_s: int = 2) -> NodeState:
    import psycopg

    try:
        with psycopg.connect(
            host=host,
            port=port,
            user="postgres",
            password=password,
            dbname="postgres",
            connect_timeout=timeout_s,
            autocommit=True,
        ) as conn:
            in_recovery, received, current = conn.execute(
                "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, "
                "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END"
            ).fetchone()
            return NodeState(region, host, port, True, in_recovery, parse_lsn(received or current))
    except psycopg.Error as exc:
        return NodeState(region, host, port, False, error=str(exc).strip().splitlines()[0])


def choose(states: list[NodeState], old_primary: str) -> NodeState:
    """The reachable replica outside the lost region that has received the most WAL."""
    candidates = [s for s in states if s.reachable and s.in_recovery and s.region != old_primary]
    if not candidates:
        raise RuntimeError("no reachable replica to promote")
    # Most WAL first; ties go to the first region in the fleet file's order.
    return max(candidates, key=lambda s: (s.received_lsn or 0, -states.index(s)))


def set_primary(spec: Path, group: str, region: str) -> None:
    """Rewrites `primary:` of one group in the fleet file, keeping comments and layout."""
    lines = spec.read_text().splitlines(keepends=True)
    group_re = re.compile(rf"^(\s*){re.escape(group)}:\s*(#.*)?$")
    start = next((i for i, ln in enumerate(lines) if group_re.match(ln)), None)
    if start is None:
        raise RuntimeError(f"group {group} not found in {spec}")
    indent = len(group_re.match(lines[start]).group(1))
    for i in range(start + 1, len(lines)):
        ln = lines[i]
        if ln.strip() and not ln.lstrip().startswith("#") and len(ln) - len(ln.lstrip()) <= indent:
            break
        m = re.match(r"^(\s*primary:\s*)([A-Za-z0-9_-]+)(.*)$", ln, re.DOTALL)
        if m:
            lines[i] = f"{m.group(1)}{region}{m.group(3)}"
            text = "".join(lines)
            tmp = spec.with_suffix(spec.suffix + ".new")
            tmp.write_text(text)
            try:
                load_fleet(tmp)
            except FleetError as exc:
                tmp.unlink()
                raise RuntimeError("; ".join(str(p) for p in exc.problems)) from None
            tmp.replace(spec)
            return
    raise RuntimeError(f"groups.{group}.primary not found in {spec}")


def cmd_failover(args) -> int:
    # Imported here: `failover` registers with every start of the CLI, which must
    # not load the Automation API (see commands.py).
    from dbfleet.ops import rollout

    spec = default_spec_path()
    [group] = fleet_groups([args.group], fleet=load_fleet_file())
    t0 = time.monotonic()
    reps = rollout.outputs(f"replicas-{group}")
    secrets = vault.read_group_secrets(
        vault.client_from_env(), reps["secret_mount"], reps["secret_path"]
    )
    old = reps["primary_region"]
    states = [
        probe(region, m["host"], int(m["port"]), secrets["superuser_password"])
        for region, node in reps["nodes"].items()
        for m in node["members"]
    ]
    for s in states:
        where = f"{s.region} {s.host}:{s.port}"
        if not s.reachable:
            print(f"failover: {where}: unreachable ({s.error})")
        else:
            role = "replica" if s.in_recovery else "PRIMARY"
            print(f"failover: {where}: {role}, WAL position {s.received_lsn}")
    alive_primary = [s for s in states if s.reachable and s.in_recovery is False]
    if alive_primary and not args.force:
        print(
            f"failover: the primary in {alive_primary[0].region} is alive: for a planned switchover set "
            f"groups.{group}.primary in {spec} and run `dbfleet up {group}` (or pass --force)",
            file=sys.stderr,
        )
        return ExitCode.ERROR
    try:
        target = next(s for s in states if s.region == args.to) if args.to else choose(states, old)
    except (RuntimeError, StopIteration):
        print(
            f"failover: no reachable replica{' in ' + args.to if args.to else ''} to promote",
            file=sys.stderr,
        )
        return ExitCode.ERROR
    best = max((s.received_lsn or 0) for s in states if s.reachable)
    print(
        f"failover: promoting {target.region} (WAL position {target.received_lsn}; "
        f"{best - (target.received_lsn or 0)} bytes behind the most advanced reachable node)"
    )
    set_primary(spec, group, target.region)
    print(f"failover: {spec}: groups.{group}.primary: {old} -> {target.region}")
    results = rollout.run([group], "up", layers=["replicas", "proxies"])
    failed = [r for rs in results.values() for r in rs if r.status == Status.FAILED]
    for r in (r for rs in results.values() for r in rs):
        print(f"failover: {r.stack}: {r.status} {r.error}".rstrip())
    if failed:
        return ExitCode.ERROR
    print(f"failover: writes go to {target.region} ({time.monotonic() - t0:.1f} s)")
    return ExitCode.OK


def register(commands) -> None:
    p = commands.add_parser(
        "failover", help="promote the most up-to-date replica of a group whose primary is lost"
    )
    p.add_argument("group", metavar="GROUP")
    p.add_argument(
        "--to", metavar="REGION", help="promote this region instead of the most up-to-date one"
    )
    p.add_argument("--force", action="store_true", help="even when the primary still answers")
    p.set_defaults(handler=guard(cmd_failover, engine=True))
