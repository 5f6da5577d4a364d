"""`dbfleet failover GROUP [--to REGION]`: make a node lead a group that has no leader.

Patroni fails a group over by itself when its leader is lost. This command is for
the case it does not: no member holds the leader key — every replica is further
behind than `max_lag_on_failover` allows, say — and an operator accepts losing
what the best replica lacks. It is a thin wrapper over Patroni:

1. it asks Patroni's view of the group (`GET /cluster` on every member's REST API,
   as `dbfleet status` does: HTTPS, verified against the group's CA) and prints one
   line per member;
2. when the group has a leader it refuses: moving a healthy leader is a planned
   switchover (set `primary:` in the fleet file and run `dbfleet up`, which asks
   Patroni for one and loses no committed write);
3. otherwise it asks the candidate's Patroni to fail over to it (`POST /failover`
   with `{"candidate": member}`, REST basic auth `patroni` and the group's
   superuser password from Vault, sent in a header only). The candidate is the
   running replica of `--to REGION`, else the group's running replica with the
   least lag (a synchronous standby first: it has every committed write);
4. it waits until the candidate leads, then rewrites `primary:` in the fleet file
   and says which file changed and that it must be committed: `primary:` is the
   preferred leader, and a clone or CI job still holding the old value would
   switch the leader back on its next `dbfleet up`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dbfleet import vault
from dbfleet.model.spec import FleetError, default_spec_path, load_fleet
from dbfleet.ops.commands import fleet_groups, group_access, guard, load_fleet_file
from dbfleet.ops.results import ExitCode

# Patroni answers POST /failover once it has seen the new leader, or after polling
# for 2 × max(10, loop_wait) s: wait a little longer than that for its answer.
POST_TIMEOUT_S = 45.0
# How long the new leader may take to show as running in /cluster.
LEAD_DEADLINE_S = 60.0
POLL_S = 0.5
# The user of Patroni's REST API for unsafe methods (restapi.authentication).
REST_USER = "patroni"

Endpoint = tuple[str, str, int]  # member name, host, REST port


def _say(text: str, *, err: bool = False) -> None:
    print(f"failover: {text}", file=sys.stderr if err else sys.stdout, flush=True)


def candidates(doc: Mapping[str, Any], order: list[str], region: str | None = None) -> list[dict]:
    """The members of a /cluster document that may lead: running replicas (of
    `region` when given), a synchronous standby first, then least lag (Patroni's
    figure; "unknown" last), ties in `order` (the group's node order)."""

    def key(m: dict) -> tuple:
        lag = m.get("lag")
        known = isinstance(lag, int)
        rank = order.index(m["name"]) if m["name"] in order else len(order)
        return (m.get("role") != "sync_standby", not known, lag if known else 0, rank)

    found = [
        m
        for m in doc.get("members", [])
        if m.get("role") in ("replica", "sync_standby")
        and m.get("state") == "running"
        and (region is None or str(m.get("name", "")).rsplit("-", 1)[0] == region)
    ]
    return sorted(found, key=key)


def post_failover(
    host: str,
    rest_port: int,
    candidate: str,
    password: str,
    context: ssl.SSLContext,
    timeout_s: float = POST_TIMEOUT_S,
) -> tuple[int, str]:
    """Patroni's POST /failover to `candidate`: (HTTP status, Patroni's answer text).
    HTTPS, the member verified by `context` (the group's CA) before the password is
    sent; the password goes in the Authorization header only (never argv, never logs)."""
    token = base64.b64encode(f"{REST_USER}:{password}".encode()).decode("ascii")
    request = urllib.request.Request(
        f"https://{host}:{rest_port}/failover",
        data=json.dumps({"candidate": candidate}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as resp:
            return resp.status, resp.read().decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace").strip()


def wait_until_leads(
    endpoints: list[Endpoint],
    candidate: str,
    pool: ThreadPoolExecutor,
    context: ssl.SSLContext,
    deadline_s: float = LEAD_DEADLINE_S,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> dict | None:
    """Polls Patroni's view until `candidate` holds the leader key and runs: that
    view, or None at the deadline."""
    from dbfleet.ops import status

    end = clock() + deadline_s
    while True:
        doc, _ = status.read_cluster(endpoints, pool, context)
        leader = status.cluster_leader(doc) if doc else None
        if leader and leader.get("name") == candidate and leader.get("state") == "running":
            return doc
        if clock() >= end:
            return None
        pause(POLL_S)


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


def _shown(path: Path) -> str:
    """The fleet file as an operator would type it: relative to here when inside."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _member_line(m: Mapping[str, Any]) -> str:
    lag = m.get("lag")
    tail = "" if lag is None else f", lag {lag} B" if isinstance(lag, int) else f", lag {lag}"
    return f"{m.get('name')}: {m.get('role')}, {m.get('state')}, timeline {m.get('timeline', '?')}{tail}"


def _rest_context(
    group: str, reps: Mapping[str, Any], endpoints: list[Endpoint]
) -> ssl.SSLContext | str:
    """The client context for the group's Patroni REST APIs (HTTPS, certificates from
    the group's CA), or why they cannot be asked."""
    from dbfleet.ops import status

    if not endpoints:
        return f"replicas-{group} has no Patroni REST API: run `dbfleet up {group}` first"
    try:
        return status.tls_context(reps.get("ca_certificate"))
    except (ValueError, ssl.SSLError) as exc:
        return f"replicas-{group}: {exc}"


def cmd_failover(args) -> int:
    # Imported here: `failover` registers with every start of the CLI, which must
    # not load the Automation API (see commands.py); status reads stacks through it.
    from dbfleet.ops import rollout, status

    spec = default_spec_path()
    fleet = load_fleet_file()
    [group] = fleet_groups([args.group], fleet=fleet)
    # A token for another group stops here, before any of this group's stacks is read.
    group_access(fleet, [group], "up")
    declared = fleet.groups[group].primary
    t0 = time.monotonic()
    reps = rollout.outputs(f"replicas-{group}")
    if args.to and args.to not in reps["nodes"]:
        _say(f"--to {args.to}: group {group} has no region {args.to}", err=True)
        return ExitCode.ERROR
    nodes = status.group_nodes(group, reps)
    endpoints = [(n.name, n.host, n.rest_port) for n in nodes if n.rest_port]
    context = _rest_context(group, reps, endpoints)
    if isinstance(context, str):
        _say(context, err=True)
        return ExitCode.ERROR
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        doc, why = status.read_cluster(endpoints, pool, context)
        if doc is None:
            _say(
                f"Patroni's view of group {group} cannot be read: {why}. Patroni cannot fail "
                f"over without its REST API and etcd: see `dbfleet status {group}`",
                err=True,
            )
            return ExitCode.ERROR
        for m in doc.get("members", []):
            _say(_member_line(m))
        leader = status.cluster_leader(doc)
        if leader:
            name, state = leader.get("name"), leader.get("state")
            why = "a healthy leader" if state == "running" else f"a leader ({state})"
            _say(
                f"group {group} has {why}, {name}: there is nothing to fail over. To move "
                f"the leader, set groups.{group}.primary in {_shown(spec)} and run "
                f"`dbfleet up {group}` (a Patroni switchover: no committed write is lost)",
                err=True,
            )
            return ExitCode.ERROR
        found = candidates(doc, [n.name for n in nodes], args.to)
        if not found:
            where = f" in {args.to}" if args.to else ""
            _say(f"group {group} has no leader and no running replica{where} to lead", err=True)
            return ExitCode.ERROR
        target = found[0]["name"]
        node = next(n for n in nodes if n.name == target)
        secrets = vault.read_group_secrets(
            vault.client_from_env(), reps["secret_mount"], reps["secret_path"]
        )
        _say(f"asking Patroni to fail over to {target} ({_member_line(found[0])})")
        code, answer = post_failover(
            node.host, node.rest_port, target, secrets["superuser_password"], context
        )
        _say(f"Patroni answered HTTP {code}: {answer}")
        if code != 200:
            return ExitCode.ERROR
        if wait_until_leads(endpoints, target, pool, context) is None:
            _say(f"{target} did not lead within {LEAD_DEADLINE_S:.0f} s", err=True)
            return ExitCode.ERROR
    _say(f"{target} leads: writes go to {node.region} ({time.monotonic() - t0:.1f} s)")
    if node.region == declared:
        _say(f"{_shown(spec)} unchanged: groups.{group}.primary is already {declared}")
    else:
        set_primary(spec, group, node.region)
        _say(f"changed {_shown(spec)}: groups.{group}.primary: {declared} -> {node.region}")
        _say(
            f"commit it: git commit {_shown(spec)} — a clone or CI job that still holds "
            f"primary: {declared} switches the leader back to {declared} on its next "
            f"`dbfleet up {group}`"
        )
    _say(f"then `dbfleet up {group}` restarts the lost node(s): they rejoin as replicas")
    return ExitCode.OK


def register(commands) -> None:
    p = commands.add_parser(
        "failover",
        help="make a replica lead a group that has no leader (Patroni's failover)",
        description="When a group has no leader, ask Patroni to fail over to the running "
        "replica with the least lag (or that of --to REGION), then record it as primary: in "
        "the fleet file. Refuses when the group has a leader: for a switchover set primary: "
        "and run `dbfleet up`.",
    )
    p.add_argument("group", metavar="GROUP")
    p.add_argument(
        "--to", metavar="REGION", help="this region's replica instead of the least lagging"
    )
    p.set_defaults(handler=guard(cmd_failover, engine=True))
