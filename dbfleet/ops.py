"""Operator commands: up, destroy, endpoints, prove."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from dbfleet import rollout
from dbfleet.spec import FleetError, default_spec_path, load_fleet

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _fleet_groups(requested: list[str]) -> list[str]:
    spec = default_spec_path()
    try:
        fleet = load_fleet(spec)
    except FleetError as exc:
        for p in exc.problems:
            print(str(p), file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    unknown = [g for g in requested if g not in fleet.groups]
    if unknown:
        print(f"unknown group(s) {', '.join(unknown)}; {spec} has: {', '.join(fleet.groups)}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)
    return requested or list(fleet.groups)


def _print_table(results: dict[str, list[rollout.StackResult]]) -> None:
    print(f"{'stack':<20} {'status':<12} {'time':>7}  changes")
    for group_results in results.values():
        for r in group_results:
            changes = ", ".join(f"{k} {v}" for k, v in r.changes.items()) or "-"
            print(f"{r.stack:<20} {r.status:<12} {r.seconds:>6.1f}s  {changes}")
            if r.error:
                for line in r.error.splitlines():
                    print(f"    {line}")


def _printer(verbose: bool):
    def show(stack: str, line: str) -> None:
        if verbose:
            print(f"[{stack}] {line}", flush=True)
        elif line.lstrip().startswith(("+ ", "~ ", "- ", "+-", "error")):
            print(f"[{stack}] {line.strip()}", flush=True)

    return show


def cmd_up(args: argparse.Namespace) -> int:
    groups = _fleet_groups(args.groups)
    results = rollout.run(groups, "up", layers=args.layer and [args.layer], printer=_printer(args.verbose))
    _print_table(results)
    return EXIT_ERROR if any(r.status == "failed" for rs in results.values() for r in rs) else EXIT_OK


def cmd_destroy(args: argparse.Namespace) -> int:
    groups = _fleet_groups(args.groups)
    if not args.yes and sys.stdin.isatty():
        answer = input(f"destroy every stack of {', '.join(groups)}? databases and their data go. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing destroyed")
            return EXIT_ERROR
    results = rollout.run(groups, "destroy", layers=args.layer and [args.layer], printer=_printer(args.verbose))
    _print_table(results)
    return EXIT_ERROR if any(r.status == "failed" for rs in results.values() for r in rs) else EXIT_OK


def endpoints(groups: list[str]) -> dict:
    out = {}
    for g in groups:
        o = rollout.outputs(f"proxies-{g}")
        out[g] = {region: {"read": o["read_endpoints"][region], "write": o["write_endpoints"][region]}
                  for region in o["read_endpoints"]}
    return out


def cmd_endpoints(args: argparse.Namespace) -> int:
    groups = _fleet_groups(args.groups)
    try:
        eps = endpoints(groups)
    except Exception as exc:  # noqa: BLE001
        print(f"endpoints: {rollout._error_text(exc)} (is the fleet up? run: dbfleet up)", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(eps, indent=2))
        return EXIT_OK
    print(f"{'group':<6} {'region':<7} {'read':<22} write")
    for g, regions in eps.items():
        for region, ep in regions.items():
            print(f"{g:<6} {region:<7} {ep['read']:<22} {ep['write']}")
    return EXIT_OK


def prove(groups: list[str], deadline_s: float = 5.0, log=print) -> list[str]:
    """Writes a row through every region's write endpoint and checks that it is read
    back through every read endpoint of its group within `deadline_s`, and through
    none of another group's. Returns the failures (empty when the fleet is sound)."""
    import psycopg

    uris = {g: rollout.outputs(f"proxies-{g}")["connection_uris"] for g in groups}
    failures: list[str] = []

    def connect(uri: str):
        return psycopg.connect(uri, connect_timeout=3, autocommit=True)

    for g in groups:
        for region, pair in uris[g].items():
            token = f"{g}-{region}-{uuid.uuid4().hex[:12]}"
            with connect(pair["write"]) as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS dbfleet_proof (token text PRIMARY KEY, region text, "
                    "written_at timestamptz DEFAULT now())"
                )
                conn.execute("INSERT INTO dbfleet_proof (token, region) VALUES (%s, %s)", (token, region))
            for other_g in groups:
                for reader, other in uris[other_g].items():
                    t0 = time.monotonic()
                    seen = False
                    while True:
                        try:
                            with connect(other["read"]) as conn:
                                row = conn.execute(
                                    "SELECT to_regclass('dbfleet_proof') IS NOT NULL"
                                ).fetchone()
                                if row[0]:
                                    seen = bool(conn.execute(
                                        "SELECT 1 FROM dbfleet_proof WHERE token = %s", (token,)
                                    ).fetchone())
                        except psycopg.Error as exc:
                            if other_g == g and time.monotonic() - t0 > deadline_s:
                                failures.append(f"{g}/{reader}: read endpoint failed: {exc}".strip())
                                break
                        if seen or other_g != g or time.monotonic() - t0 > deadline_s:
                            break
                        time.sleep(0.1)
                    waited = time.monotonic() - t0
                    if other_g == g and not seen:
                        failures.append(f"{g}/{region} write not readable via {g}/{reader} after {deadline_s:.0f} s")
                    elif other_g != g and seen:
                        failures.append(f"{g}/{region} write LEAKED into group {other_g} ({reader})")
                    elif other_g == g:
                        log(f"prove: {g}/{region} write -> read via {g}/{reader} in {waited * 1000:.0f} ms")
    return failures


def cmd_prove(args: argparse.Namespace) -> int:
    groups = _fleet_groups(args.groups)
    failures = prove(groups, args.deadline)
    for f in failures:
        print(f"prove: FAILED {f}", file=sys.stderr)
    if not failures:
        print(f"prove: every write was read back in every region of its group within {args.deadline:.0f} s, "
              "and in no other group")
    return EXIT_ERROR if failures else EXIT_OK


def register(commands) -> None:
    for name, handler, help_text in (
        ("up", cmd_up, "bring up every layer of the groups, in order (groups in parallel)"),
        ("destroy", cmd_destroy, "destroy every layer of the groups, in reverse order"),
    ):
        p = commands.add_parser(name, help=help_text)
        p.add_argument("groups", nargs="*", metavar="GROUP")
        p.add_argument("--layer", choices=["accounts", "networks", "replicas", "proxies"])
        p.add_argument("-v", "--verbose", action="store_true", help="stream the engine's output")
        if name == "destroy":
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        p.set_defaults(handler=handler)
    p = commands.add_parser("endpoints", help="print each region's read and write endpoints")
    p.add_argument("groups", nargs="*", metavar="GROUP")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_endpoints)
    p = commands.add_parser("prove", help="write in every region, read back in every region of the group")
    p.add_argument("groups", nargs="*", metavar="GROUP")
    p.add_argument("--deadline", type=float, default=5.0, help="seconds a write may take to appear")
    p.set_defaults(handler=cmd_prove)
