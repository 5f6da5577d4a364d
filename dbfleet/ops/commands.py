"""Operator commands: up, destroy, preview, status, endpoints, prove, graph.

Exit codes (every command): 0 success, 1 error. `preview` adds 2 — changes pending —
aggregated over every stack: any stack that fails makes it 1, whatever the others
plan, so CI can trust it. `status` adds 3 — the fleet answers but something is
down or not in its declared role.

The engine-facing modules (rollout, report, progress) are imported inside the
commands that use them, so `dbfleet validate` and `--help` start without loading
the Automation API.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from dbfleet.model.spec import FleetError, FleetSpec, default_spec_path, load_fleet
from dbfleet.model.stackname import LAYERS, StackNameError, parse_stack_name
from dbfleet.ops.results import ExitCode


class Abort(Exception):
    """Stops a command with a message on stderr and exit code 1."""


def _err(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr, flush=True)


def load_fleet_file(*, deployed: bool = True) -> FleetSpec:
    """The fleet file in use; with `deployed`, refused (one line, before anything is
    changed) when the backend's stacks belong to another fleet (dbfleet.ops.identity)."""
    spec = default_spec_path()
    try:
        fleet = load_fleet(spec)
    except FleetError as exc:
        raise Abort("\n".join(str(p) for p in exc.problems)) from None
    if deployed:
        from dbfleet.ops import identity

        refused = identity.refusal(fleet, spec)
        if refused:
            raise Abort(refused)
    return fleet


def vault_ready():
    """Vault reachable, unsealed, and VAULT_TOKEN valid for it: checked once, before
    any stack runs. Otherwise every stack's program finds out on its own, one after
    the other (seconds each), and says so once per stack. Returns the client."""
    from dbfleet import vault

    try:
        return vault.client_from_env()
    except vault.VaultError as exc:
        raise Abort(f"dbfleet: {exc}") from None


def group_vault(
    fleet: FleetSpec, groups: list[str], action: str, *, required: bool = True
) -> dict[str, str]:
    """VAULT_TOKEN's access to the groups for `action` (dbfleet.ops.access): one line
    per refused group, before any of their stacks is read. `required`: Vault must answer
    (up, preview); otherwise a Vault that cannot be asked is left for the command to
    report. Returns the secrets provider of the groups' new stacks (group → URL;
    empty: the passphrase)."""
    try:
        client = vault_ready()
    except Abort:
        if required:
            raise
        return {}
    if client is None:  # no Vault to ask (a stand-in)
        return {}
    from dbfleet.ops import access

    if not required:
        access.require(client, fleet, groups, action)
        return {}
    providers = access.prepare(client, fleet, groups, action)
    note = access.passphrase_note(access.project_dir(), groups) if providers else None
    if note:
        _err(note)
    return providers


def group_access(fleet: FleetSpec, groups: list[str], action: str) -> None:
    """`group_vault` for commands that need no Vault of their own (status, endpoints, ...)."""
    group_vault(fleet, groups, action, required=False)


def fleet_groups(
    requested: list[str], *, fleet: FleetSpec | None = None, extra: set[str] | None = None
) -> list[str]:
    """The requested groups (default: every group of the fleet file), checked.
    `extra` are groups that exist only as stacks (destroy may still remove them)."""
    fleet = fleet or load_fleet_file()
    known = list(fleet.groups) + sorted((extra or set()) - set(fleet.groups))
    unknown = [g for g in requested if g not in known]
    if unknown:
        raise Abort(
            f"unknown group(s) {', '.join(unknown)}; {default_spec_path()} has: {', '.join(fleet.groups)}"
        )
    return list(dict.fromkeys(requested)) or known


def _layers(args: argparse.Namespace) -> list[str] | None:
    return list(dict.fromkeys(args.layer)) if getattr(args, "layer", None) else None


def _printer(verbose: bool):
    if not verbose:
        return None

    def show(stack: str, line: str) -> None:
        print(f"[{stack}] {line}", file=sys.stderr, flush=True)

    return show


def _write(path: str, text: str, stdout: TextIO | None = None) -> None:
    if path == "-":
        (stdout or sys.stdout).write(text)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


# -- up / destroy ----------------------------------------------------------------------
def _apply(
    args: argparse.Namespace,
    action: str,
    groups: list[str],
    fleet: FleetSpec | None = None,
    providers: dict[str, str] | None = None,
) -> int:
    from dbfleet.ops import progress as progress_mod
    from dbfleet.ops import report, rollout

    # Progress goes to stderr, so --json on stdout stays clean; only --quiet silences it.
    progress = progress_mod.choose(quiet=args.quiet)
    results = rollout.run(
        groups,
        action,
        layers=_layers(args),
        progress=progress,
        options=rollout.RunOptions(
            printer=_printer(args.verbose), secrets_providers=dict(providers or {})
        ),
    )
    flat = rollout.flat(results)
    code = report.exit_code(flat, preview=False)
    text = (
        report.dumps(report.document(flat, command=action, code=code))
        if args.json
        else report.table(flat) + "\n"
    )
    if any(r.error for r in flat) and fleet is not None:
        text = report.scrub(text, _known_secrets(fleet, groups))
    sys.stdout.write(text)
    return code


def cmd_up(args: argparse.Namespace) -> int:
    fleet = load_fleet_file()
    groups = fleet_groups(args.groups, fleet=fleet)
    providers = group_vault(fleet, groups, "up")
    return _apply(args, "up", groups, fleet, providers)


def _stack_groups() -> dict[str, list[str]]:
    """Groups that have stacks in the backend → their stacks."""
    from dbfleet.ops import locks, rollout

    # A killed engine's torn checkpoint metadata would break the stack list itself.
    for done in locks.repair_every_stack().values():
        _err(*done)
    out: dict[str, list[str]] = {}
    for name, count in rollout.deployed_stacks().items():
        try:
            parsed = parse_stack_name(name)
        except StackNameError:
            continue
        if count > 0:
            out.setdefault(parsed.group, []).append(name)
    return out


def cmd_destroy(args: argparse.Namespace) -> int:
    live = _stack_groups()
    # A group removed from the fleet file still has its stacks: destroy can remove them.
    # Destroying needs the state, not the fleet file: a broken file must not stop it.
    fleet: FleetSpec | None
    try:
        fleet = load_fleet_file(deployed=False)
    except Abort as exc:
        _err(f"note: the fleet file is invalid, so only deployed stacks are known:\n{exc}")
        fleet = None
    if fleet is not None:
        fleet = load_fleet_file()  # never destroy another fleet's stacks
        groups = fleet_groups(args.groups, fleet=fleet, extra=set(live))
        group_access(fleet, groups, "destroy")
    else:
        unknown = [g for g in args.groups if g not in live]
        if unknown:
            raise Abort(f"no stacks deployed for group(s) {', '.join(unknown)}")
        groups = list(dict.fromkeys(args.groups)) or sorted(live)
    layers = _layers(args) or list(LAYERS)
    doomed = [s for g in groups for s in live.get(g, []) if parse_stack_name(s).layer in layers]
    if not args.yes:
        if not sys.stdin.isatty():
            raise Abort("destroy asks for confirmation on a terminal; without one, pass --yes")
        if not doomed:
            print("nothing to destroy: none of these stacks is deployed")
            return ExitCode.OK
        print(f"This destroys {', '.join(doomed)}: databases and their data go.", file=sys.stderr)
        answer = input("Destroy? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing destroyed", file=sys.stderr)
            return ExitCode.ERROR
    return _apply(args, "destroy", groups, fleet)


# -- preview ---------------------------------------------------------------------------
def _known_secrets(fleet: FleetSpec, groups: list[str]) -> list[str]:
    """The groups' Vault passwords, to scrub from reports (best effort: a report
    must be written even when Vault cannot be reached)."""
    try:
        from dbfleet import vault

        client = vault.client_from_env()
        values: list[str] = []
        for g in groups:
            try:
                values += vault.read_group_secrets(
                    client, vault.DEFAULT_MOUNT, vault.secret_path(fleet.name, g)
                ).values()
            except Exception:  # noqa: BLE001, S112 — a group without secrets has none to scrub
                continue
        return values
    except Exception:  # noqa: BLE001
        return []


def _shown(path: Path) -> str:
    """A path as the operator typed it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_preview(args: argparse.Namespace) -> int:
    from dbfleet.ops import identity, report, rollout
    from dbfleet.ops import progress as progress_mod

    fleet = load_fleet_file()
    groups = fleet_groups(args.groups, fleet=fleet)
    providers = group_vault(fleet, groups, "preview")
    packs: list[str] = []
    pack = None if args.no_policies else rollout.policy_pack_dir()
    if pack is not None:
        packs.append(str(pack))
    progress = progress_mod.choose(quiet=args.quiet, planning=True)
    results = rollout.run(
        groups,
        "preview",
        layers=_layers(args),
        progress=progress,
        options=rollout.RunOptions(
            policy_packs=packs,
            printer=_printer(args.verbose),
            chain=not args.no_chain,
            secrets_providers=providers,
        ),
    )
    flat = rollout.flat(results)
    # A preview of the whole fleet also lists the groups the file no longer has.
    orphans = (
        identity.orphaned(fleet, identity.deployed(rollout.project_dir()), _layers(args))
        if set(groups) == set(fleet.groups)
        else {}
    )
    flat += identity.orphan_results(orphans, default_spec_path())
    code = report.exit_code(flat, preview=True)
    # Every report and the table pass through scrub: no known password gets out,
    # whatever an engine or script error message might have quoted.
    secrets = _known_secrets(fleet, groups)
    policy_note = (
        f"policies: {_shown(pack)}"
        if pack
        else (
            "policies: skipped (--no-policies)"
            if args.no_policies
            else "policies: none (no policies/PulumiPolicy.yaml)"
        )
    )
    if args.markdown:
        context = f"Fleet file `{_shown(default_spec_path())}`; {policy_note}. Exit code {code}."
        if orphans:
            context += "\n\n" + identity.orphan_markdown(orphans, default_spec_path())
        _write(args.markdown, report.scrub(report.markdown(flat, context=context), secrets))
    if args.json:
        doc = report.document(
            flat,
            command="preview",
            code=code,
            extra={
                "policies": str(pack) if pack else None,
                "orphaned_groups": identity.orphan_json(orphans),
            },
        )
        _write(args.json, report.scrub(report.dumps(doc), secrets))
    if args.json != "-":
        text = report.table(flat)
        diff = report.text_diff(flat) if args.diff else ""
        if diff:
            text += "\n\n" + diff
        print(report.scrub(text, secrets))
        print(
            {
                ExitCode.OK: "no changes",
                ExitCode.CHANGES: "changes pending",
                ExitCode.ERROR: "preview failed",
            }[code]
            + f" (exit {code}); {policy_note}",
            file=sys.stderr,
        )
        for group in orphans:
            _err(f"orphaned: group {group}; remove it with: {identity.remove_command(group)}")
    return code


# -- status ----------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    from dbfleet.ops import status

    fleet = load_fleet_file()
    groups = fleet_groups(args.groups, fleet=fleet)
    group_access(fleet, groups, "status")
    states = status.collect(groups)
    if args.json:
        print(json.dumps({"groups": [g.to_json() for g in states]}, indent=2))
    else:
        print(status.render(states))
    # A group dbfleet could not ask (not deployed, or Vault unreadable) is an
    # error, not a degraded fleet: nothing is known to be down.
    if not all(g.readable for g in states):
        return ExitCode.ERROR
    return ExitCode.OK if all(g.healthy for g in states) else ExitCode.DEGRADED


# -- endpoints / prove -----------------------------------------------------------------
def endpoints(groups: list[str]) -> dict:
    from dbfleet.ops import rollout

    found = rollout.many_outputs([f"proxies-{g}" for g in groups])
    out = {}
    for g in groups:
        o = found[f"proxies-{g}"]
        if not o or "read_endpoints" not in o:
            raise Abort(f"endpoints: proxies-{g} is not deployed (run: dbfleet up {g})")
        out[g] = {
            region: {"read": o["read_endpoints"][region], "write": o["write_endpoints"][region]}
            for region in o["read_endpoints"]
        }
    return out


def app_environment(region: str, fleet: FleetSpec, *, show_secrets: bool = False) -> dict:
    """The variables an application in `region` needs (dbfleet.client reads them): its
    read URI, its write URI (the region's write endpoint, which reaches the primary),
    the primary region, the region and the token scope. Passwords are `****` unless
    `show_secrets`."""
    from dbfleet.client import redact
    from dbfleet.ops import rollout

    group = next((g for g, spec in fleet.groups.items() if region in spec.regions), None)
    if group is None:
        known = ", ".join(r for spec in fleet.groups.values() for r in spec.regions)
        raise Abort(f"endpoints: no region {region!r} in {default_spec_path()} (regions: {known})")
    group_access(fleet, [group], "endpoints")
    proxies = rollout.stack_outputs(f"proxies-{group}", show_secrets=True)
    if not proxies or region not in (proxies.get("connection_uris") or {}):
        raise Abort(f"endpoints: proxies-{group} is not deployed (run: dbfleet up {group})")
    replicas = rollout.stack_outputs(f"replicas-{group}") or {}
    uris = proxies["connection_uris"][region]
    shown = (lambda uri: uri) if show_secrets else redact
    return {
        "DATABASE_URL": shown(uris["read"]),
        "DATABASE_WRITE_URL": shown(uris["write"]),
        # the deployed primary (a failover moves it), else the fleet file's
        "PRIMARY_REGION": replicas.get("primary_region") or fleet.groups[group].primary,
        "DBFLEET_REGION": region,
        "DBFLEET_GROUP": f"{fleet.name}/{group}",
    }


def dotenv(variables: Mapping[str, str]) -> str:
    """NAME=value lines; a value with anything but URI characters is single-quoted."""
    lines = []
    for name, value in variables.items():
        plain = all(c.isalnum() or c in "_./:@%*+=,-" for c in value)
        lines.append(f"{name}={value}" if plain else f"{name}='{value}'")
    return "\n".join(lines)


def cmd_app_environment(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    # Passwords go to a file or a pipe, never to a screen someone may be looking at.
    if args.show_secrets and out.isatty():
        raise Abort(
            "endpoints: --show-secrets refuses to print passwords to a terminal; "
            f"redirect it: dbfleet endpoints --env {args.env} --show-secrets > .env"
        )
    variables = app_environment(args.env, load_fleet_file(), show_secrets=args.show_secrets)
    print(json.dumps(variables, indent=2) if args.json else dotenv(variables), file=out)
    if args.show_secrets:
        _err("endpoints: the output holds the application's password: keep it 0600, out of git")
    return ExitCode.OK


def cmd_endpoints(args: argparse.Namespace) -> int:
    if args.env:
        if args.groups:
            raise Abort("endpoints: --env REGION takes no GROUP")
        return cmd_app_environment(args)
    if args.show_secrets:
        raise Abort("endpoints: --show-secrets goes with --env REGION")
    fleet = load_fleet_file()
    groups = fleet_groups(args.groups, fleet=fleet)
    group_access(fleet, groups, "endpoints")
    eps = endpoints(groups)
    if args.json:
        print(json.dumps(eps, indent=2))
        return ExitCode.OK
    print(f"{'group':<6} {'region':<7} {'read':<22} write")
    for g, regions in eps.items():
        for region, ep in regions.items():
            print(f"{g:<6} {region:<7} {ep['read']:<22} {ep['write']}")
    return ExitCode.OK


def prove(groups: list[str], deadline_s: float = 5.0, log=print) -> list[str]:
    """Writes a row through every region's write endpoint and checks that it is read
    back through every read endpoint of its group within `deadline_s`, and through
    none of another group's. Returns the failures (empty when the fleet is sound)."""
    import psycopg

    from dbfleet.ops import rollout

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
                conn.execute(
                    "INSERT INTO dbfleet_proof (token, region) VALUES (%s, %s)", (token, region)
                )
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
                                    seen = bool(
                                        conn.execute(
                                            "SELECT 1 FROM dbfleet_proof WHERE token = %s", (token,)
                                        ).fetchone()
                                    )
                        except psycopg.Error as exc:
                            if other_g == g and time.monotonic() - t0 > deadline_s:
                                failures.append(
                                    f"{g}/{reader}: read endpoint failed: {exc}".strip()
                                )
                                break
                        if seen or other_g != g or time.monotonic() - t0 > deadline_s:
                            break
                        time.sleep(0.1)  # polling interval of the deadline loop above
                    waited = time.monotonic() - t0
                    if other_g == g and not seen:
                        failures.append(
                            f"{g}/{region} write not readable via {g}/{reader} after {deadline_s:.0f} s"
                        )
                    elif other_g != g and seen:
                        failures.append(
                            f"{g}/{region} write LEAKED into group {other_g} ({reader})"
                        )
                    elif other_g == g:
                        log(
                            f"prove: {g}/{region} write -> read via {g}/{reader} in {waited * 1000:.0f} ms"
                        )
    return failures


def cmd_prove(args: argparse.Namespace) -> int:
    fleet = load_fleet_file()
    groups = fleet_groups(args.groups, fleet=fleet)
    group_access(fleet, groups, "prove")
    failures = prove(groups, args.deadline)
    for f in failures:
        _err(f"prove: FAILED {f}")
    if not failures:
        print(
            f"prove: every write was read back in every region of its group within {args.deadline:.0f} s, "
            "and in no other group"
        )
    return ExitCode.ERROR if failures else ExitCode.OK


# -- graph -----------------------------------------------------------------------------
def cmd_graph(args: argparse.Namespace) -> int:
    from dbfleet.ops import graph

    fleet = load_fleet_file(deployed=False)  # draws the file only
    groups = fleet_groups(args.groups, fleet=fleet)
    text = graph.to_dot(fleet, groups)
    if not args.out:
        if args.format not in (None, "dot"):
            raise Abort("graph: --format svg/png/pdf needs --out FILE")
        sys.stdout.write(text)
        return ExitCode.OK
    out = Path(args.out)
    try:
        graph.render(text, out, graph.output_format(out, args.format))
    except (ValueError, RuntimeError) as exc:
        raise Abort(f"graph: {exc}") from None
    print(f"graph: wrote {out}")
    return ExitCode.OK


# -- the parser ------------------------------------------------------------------------
ENV_HINT = "run `source scripts/env.sh` in the dbfleet checkout first (`make setup` installs what it needs)"


def engine_ready(env: Mapping[str, str] | None = None) -> None:
    """The shell can drive the engine: `pulumi` is on PATH and a backend is chosen.
    Without them the Automation API dies with a traceback ('pulumi' not found) or
    asks for a Pulumi Cloud token, neither of which says what to do."""
    env = os.environ if env is None else env
    if not shutil.which("pulumi", path=env.get("PATH")):
        raise Abort(f"dbfleet: the pulumi CLI is not on PATH: {ENV_HINT}")
    if not env.get("PULUMI_BACKEND_URL"):
        raise Abort(
            "dbfleet: PULUMI_BACKEND_URL is not set (dbfleet keeps its state in a file "
            f"backend, not Pulumi Cloud): {ENV_HINT}"
        )


def guard(handler, *, engine: bool = False):
    """Wraps a command: a message instead of a traceback; `engine` commands first
    check that the shell can drive the engine."""

    def run(args: argparse.Namespace) -> int:
        try:
            if engine:
                engine_ready()
                from dbfleet.ops import access, pyhost

                # gocloud's hashivault driver in every pulumi process uses VAULT_TOKEN
                access.point_engine_at_vault()
                pyhost.use_for_engine()
            return handler(args)
        except Abort as exc:
            _err(str(exc))
            return ExitCode.ERROR
        except KeyboardInterrupt:
            _err("interrupted")
            return ExitCode.INTERRUPTED
        except Exception as exc:  # noqa: BLE001 — an operator gets a message, not a traceback
            detail = " ".join(str(getattr(exc, "stderr", "") or exc).split())
            _err(f"dbfleet {args.command}: {type(exc).__name__}: {detail}")
            return ExitCode.ERROR

    return run


def _rollout_flags(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    p.add_argument(
        "groups", nargs="*", metavar="GROUP", help="region groups (default: every group)"
    )
    p.add_argument(
        "--layer",
        action="append",
        choices=list(LAYERS),
        metavar="LAYER",
        help=f"only this layer ({', '.join(LAYERS)}); repeatable",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no live progress, only the final table"
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="stream the engine's own output to stderr"
    )
    if json_flag:
        p.add_argument(
            "--json", action="store_true", help="print a JSON document instead of the table"
        )


def register(commands) -> None:
    p = commands.add_parser(
        "up",
        help="bring up every layer of the groups, in order (groups in parallel)",
        description="Apply every layer of the groups in dependency order; groups run in parallel and a group "
        "stops at its first failed stack. Exit 0 when every stack applied, 1 otherwise.",
    )
    _rollout_flags(p)
    p.set_defaults(handler=guard(cmd_up, engine=True))

    p = commands.add_parser(
        "destroy",
        help="destroy every layer of the groups, in reverse order",
        description="Destroy the groups' stacks, last layer first. Asks on a terminal unless --yes; "
        "without a terminal --yes is required.",
    )
    _rollout_flags(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=guard(cmd_destroy, engine=True))

    p = commands.add_parser(
        "preview",
        help="what up would change, per stack; exit 0 none, 2 changes, 1 error",
        description="Preview every stack (with the policy pack in policies/ when there is one). "
        "Exit 0: no changes; 2: changes pending; 1: any stack failed (errors win over changes).",
    )
    _rollout_flags(p, json_flag=False)
    p.add_argument("--diff", action="store_true", help="also print the property-level diff")
    p.add_argument(
        "--markdown", metavar="FILE", help="write a review report (Markdown) to FILE ('-': stdout)"
    )
    p.add_argument(
        "--json", metavar="FILE", help="write the result as JSON to FILE ('-': stdout, no table)"
    )
    p.add_argument("--no-policies", action="store_true", help="do not run the policy pack")
    p.add_argument(
        "--no-chain",
        action="store_true",
        help="preview each stack against what is deployed upstream, not against the upstream's plan",
    )
    p.set_defaults(handler=guard(cmd_preview, engine=True))

    p = commands.add_parser(
        "status",
        help="live state of every region: roles, replication lag, proxy backends",
        description="Ask every node and proxy of the groups how it is. Exit 0 healthy, 3 something is down "
        "or not in its declared role, 1 the fleet cannot be read.",
    )
    p.add_argument("groups", nargs="*", metavar="GROUP")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=guard(cmd_status, engine=True))

    p = commands.add_parser(
        "endpoints",
        help="print each region's read and write endpoints, or an app's environment",
        description="Print each region's read and write endpoints. With --env REGION, print "
        "the variables an application in REGION needs (dotenv, or JSON with --json); passwords "
        "are **** unless --show-secrets, which refuses to write to a terminal.",
    )
    p.add_argument("groups", nargs="*", metavar="GROUP")
    p.add_argument("--json", action="store_true")
    p.add_argument("--env", metavar="REGION", help="the environment of an app in REGION")
    p.add_argument(
        "--show-secrets", action="store_true", help="with --env: real passwords (not to a tty)"
    )
    p.set_defaults(handler=guard(cmd_endpoints, engine=True))

    p = commands.add_parser(
        "prove", help="write in every region, read back in every region of the group"
    )
    p.add_argument("groups", nargs="*", metavar="GROUP")
    p.add_argument("--deadline", type=float, default=5.0, help="seconds a write may take to appear")
    p.set_defaults(handler=guard(cmd_prove, engine=True))

    p = commands.add_parser(
        "graph",
        help="draw the fleet (Graphviz): groups, regions, primary, read failover",
        description="Draw the fleet file's groups and regions. Without --out, print the DOT text.",
    )
    p.add_argument("groups", nargs="*", metavar="GROUP")
    p.add_argument("--out", metavar="FILE", help="write SVG, PNG, PDF or DOT (by extension)")
    p.add_argument("--format", choices=["svg", "png", "pdf", "dot"], help="override the format")
    p.set_defaults(handler=guard(cmd_graph))
