"""The `dbfleet` command. Subcommands register themselves in `build_parser`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from dbfleet.model.spec import SPEC_ENV_VAR, FleetError, FleetSpec, default_spec_path, load_fleet
from dbfleet.ops import access, backup, failover
from dbfleet.ops import commands as ops
from dbfleet.ops.results import ExitCode

# argparse exits with 2 on a usage error.
ARGPARSE_USAGE = 2


def _emit(stream: TextIO, line: str) -> None:
    """Print one line, even when the terminal cannot encode it (never a traceback)."""
    try:
        print(line, file=stream)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        print(line.encode(encoding, "backslashreplace").decode(encoding), file=stream)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summarize(fleet: FleetSpec) -> str:
    """`2 groups (eu: fra*, lhr, arn; us: iad*, ord, sjc), 6 regions, 6 nodes`."""
    parts = []
    for name in sorted(fleet.groups):
        group = fleet.groups[name]
        # Primary first and starred, then the others in the file's order.
        others = [code for code in group.regions if code != group.primary]
        parts.append(f"{name}: " + ", ".join([f"{group.primary}*", *others]))
    regions = sum(len(g.regions) for g in fleet.groups.values())
    nodes = sum(r.nodes for g in fleet.groups.values() for r in g.regions.values())
    return (
        f"{_plural(len(fleet.groups), 'group')} ({'; '.join(parts)}), "
        f"{_plural(regions, 'region')}, {_plural(nodes, 'node')}"
    )


def _validate_one(named: str | None, *, several: bool) -> bool:
    """Checks one fleet file; with `several` files named, every problem line names its
    file (a problem about a key does not otherwise say which file it is in)."""
    path = Path(named) if named is not None else default_spec_path()
    try:
        fleet = load_fleet(path)
    except FleetError as exc:
        for problem in exc.problems:
            line = str(problem)
            if several and not line.startswith(f"{path}:"):
                line = f"{path}: {line}"
            _emit(sys.stderr, line)
        return False
    except Exception as exc:  # noqa: BLE001 - the contract is "never a traceback"
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        _emit(sys.stderr, f"{path}: internal error: {detail}")
        return False
    _emit(sys.stdout, f"{named or path}: valid — {summarize(fleet)}")
    return True


def cmd_validate(args: argparse.Namespace) -> int:
    """Every file named (else the default one), each on its own: a bad file does not stop
    the others from being checked; exit 1 when any is bad."""
    files = args.files or [None]
    results = [_validate_one(named, several=len(files) > 1) for named in files]
    return ExitCode.OK if all(results) else ExitCode.ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbfleet", description="Multi-region PostgreSQL fleets on Pulumi."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate",
        help="check a fleet file without touching anything",
        description="Check fleet files. Exit 0 when all are valid, 1 with one line per "
        "problem (each naming its file).",
    )
    validate.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="fleet files (default: $DBFLEET_SPEC, else stacks/fleet.yaml)",
    )
    validate.set_defaults(handler=cmd_validate)
    ops.register(commands)
    access.register(commands)
    failover.register(commands)
    backup.register(commands)
    return parser


# Commands whose exit code 2 means "changes pending": their usage errors exit 1,
# so a typo in a CI job can never pass for a pending change.
EXIT_2_MEANS_CHANGES = ("preview",)


def _command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _absolute_spec(env: dict[str, str] | os._Environ) -> None:
    """A relative DBFLEET_SPEC names a file from where the operator stands; the
    engine runs the program and the policy pack in other directories, so they are
    given its absolute path."""
    spec = env.get(SPEC_ENV_VAR)
    if spec and not os.path.isabs(spec):
        env[SPEC_ENV_VAR] = os.path.abspath(spec)


def main(argv: list[str] | None = None) -> int:
    _absolute_spec(os.environ)
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors
        if exc.code is None or exc.code == 0:
            return ExitCode.OK
        code = exc.code if isinstance(exc.code, int) else ARGPARSE_USAGE
        if code == ARGPARSE_USAGE and _command(argv) in EXIT_2_MEANS_CHANGES:
            return ExitCode.ERROR
        return code
    return args.handler(args)
