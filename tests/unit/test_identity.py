"""Which fleet the deployed stacks belong to (dbfleet.model.identity, dbfleet.ops.identity),
and what the operator commands do with it: refuse another fleet's file, list orphaned groups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dbfleet import PROJECT_ROOT
from dbfleet.model import identity
from dbfleet.model.identity import FleetIdentity
from dbfleet.model.spec import parse_fleet
from dbfleet.model.stackname import LAYERS
from dbfleet.ops import commands as ops
from dbfleet.ops import identity as ops_identity
from dbfleet.ops import rollout
from dbfleet.ops.cli import main
from dbfleet.ops.results import StackResult, Status

FLEET = """name: {name}
groups:
  us:
    zone: US
    primary: iad
    regions: {{iad: {{nodes: 1}}, ord: {{nodes: 1}}, sjc: {{nodes: 1}}}}
"""


# -- the identity itself ----------------------------------------------------------------------
def test_a_fleet_file_inside_the_checkout_is_recorded_relative_to_it(tmp_path: Path) -> None:
    assert identity.recorded_file(PROJECT_ROOT / "stacks" / "fleet.yaml") == "stacks/fleet.yaml"
    moved = tmp_path / "checkout"
    (moved / "stacks").mkdir(parents=True)
    assert identity.recorded_file(moved / "stacks" / "fleet.yaml", moved) == "stacks/fleet.yaml"
    outside = tmp_path / "nc.yaml"
    assert identity.recorded_file(outside) == str(outside.resolve())
    assert FleetIdentity("x", "stacks/fleet.yaml").shown_file(moved) == str(
        moved / "stacks" / "fleet.yaml"
    )


@pytest.mark.parametrize(
    ("outputs", "found"),
    [
        ({"fleet": {"name": "nc", "file": "/a/nc.yaml"}}, FleetIdentity("nc", "/a/nc.yaml")),
        # deployed by an older dbfleet: the Vault path names the fleet
        ({"secret_path": "dbfleet/nc/us/postgres", "user": "nc-us"}, FleetIdentity("nc")),
        ({"regions": {}}, None),
        ({"secret_path": "elsewhere/nc/us"}, None),
        ({}, None),
    ],
)
def test_the_fleet_a_stack_belongs_to_comes_from_its_outputs(outputs, found) -> None:
    assert identity.from_outputs(outputs) == found


def test_a_mismatch_is_one_line_naming_both_fleets_and_files(tmp_path: Path) -> None:
    spec = tmp_path / "fleet.yaml"
    deployed = {
        "accounts-us": FleetIdentity("nc", "/home/nc/nc.yaml"),
        "networks-us": FleetIdentity("nc", "/home/nc/nc.yaml"),
        "replicas-us": None,
    }
    message = identity.mismatch("dbfleet", spec, deployed)
    assert message is not None and "\n" not in message
    assert f"fleet file {spec.resolve()} is fleet 'dbfleet'" in message
    assert "stacks accounts-us, networks-us belong to fleet 'nc' (fleet file /home/nc/nc.yaml)" in (
        message
    )
    assert "DBFLEET_SPEC=/home/nc/nc.yaml" in message and "renamed only by destroying" in message
    assert identity.mismatch("nc", spec, deployed) is None
    assert identity.mismatch("dbfleet", spec, {}) is None


# -- the backend, read straight from the file backend ----------------------------------------
def checkpoint(state: Path, stack: str, outputs: dict[str, Any] | None, extra: int = 2) -> None:
    resources = []
    if outputs is not None:
        resources = [{"type": "pulumi:pulumi:Stack", "outputs": outputs}] + [
            {"type": "x"} for _ in range(extra)
        ]
    path = state / ".pulumi" / "stacks" / "dbfleet" / f"{stack}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"checkpoint": {"latest": {"resources": resources}}}))


def owned(name: str, group: str) -> dict[str, Any]:
    return {"fleet": {"name": name, "file": f"/f/{name}.yaml"}, "group": group}


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    (state / ".pulumi").mkdir(parents=True)
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{state}")
    monkeypatch.setenv("DBFLEET_PROJECT_DIR", str(PROJECT_ROOT))
    return state


def test_deployed_stacks_are_read_from_their_checkpoints(backend: Path) -> None:
    checkpoint(backend, "accounts-us", owned("nc", "us"))
    checkpoint(backend, "networks-us", {"regions": {}})
    checkpoint(backend, "accounts-eu", None)  # destroyed: no resources left
    (backend / ".pulumi" / "stacks" / "dbfleet" / "accounts-us.json.attrs").write_text("")
    found = ops_identity.deployed(PROJECT_ROOT)
    assert set(found) == {"accounts-us", "networks-us", "accounts-eu"}
    assert found["accounts-us"].fleet == FleetIdentity("nc", "/f/nc.yaml")
    assert found["accounts-us"].resources == 3
    assert found["networks-us"].fleet is None and found["accounts-eu"].resources == 0


def test_orphaned_groups_are_deployed_groups_the_file_does_not_have(backend: Path) -> None:
    fleet = parse_fleet(FLEET.format(name="dbfleet"))
    for layer in LAYERS:
        checkpoint(backend, f"{layer}-us", owned("dbfleet", "us"))
        checkpoint(backend, f"{layer}-eu", owned("dbfleet", "eu"))
    checkpoint(backend, "accounts-ap", None)  # destroyed already: nothing runs
    stacks = ops_identity.deployed(PROJECT_ROOT)
    assert ops_identity.orphaned(fleet, stacks) == {"eu": [f"{layer}-eu" for layer in LAYERS]}
    orphans = ops_identity.orphaned(fleet, stacks, ["replicas", "proxies"])
    rows = ops_identity.orphan_results(orphans, Path("f.yaml"))
    assert [(r.stack, r.status) for r in rows] == [
        ("replicas-eu", Status.ORPHANED),
        ("proxies-eu", Status.ORPHANED),
    ]
    assert "dbfleet destroy eu --yes" in rows[0].note and rows[0].has_changes


# -- the commands --------------------------------------------------------------------------------
class FakeRun:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str]] = []

    def __call__(self, groups, action, *, layers=None, progress=None, options=None, printer=None):
        self.calls.append((list(groups), action))
        status = {"preview": Status.NO_CHANGES, "up": Status.UNCHANGED}.get(action, "destroyed")
        return {g: [StackResult(f"{layer}-{g}", status) for layer in LAYERS] for g in groups}


@pytest.fixture
def fleet_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    spec = tmp_path / "fleet.yaml"
    spec.write_text(FLEET.format(name="dbfleet"))
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    monkeypatch.setattr(ops, "_known_secrets", lambda fleet, groups: [])
    monkeypatch.setattr(ops, "vault_ready", lambda: None)
    monkeypatch.setattr(ops, "engine_ready", lambda: None)  # no pulumi needed: the engine is faked
    return spec


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    fake = FakeRun()
    monkeypatch.setattr(rollout, "run", fake)
    monkeypatch.setattr(rollout, "policy_pack_dir", lambda: None)
    return fake


@pytest.mark.parametrize(
    "argv",
    [
        ["preview"],
        ["up", "us"],
        ["destroy", "--yes"],
        ["status"],
        ["endpoints"],
        ["prove"],
        ["failover", "us"],
    ],
)
def test_every_command_refuses_the_file_of_another_fleet_before_doing_anything(
    argv, backend: Path, fleet_file: Path, fake_run: FakeRun, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(ops, "_stack_groups", lambda: {"us": [f"{x}-us" for x in LAYERS]})
    for layer in LAYERS:
        checkpoint(backend, f"{layer}-us", owned("ncfleet", "us"))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and fake_run.calls == []
    assert len(err.strip().splitlines()) == 1, err
    assert f"fleet file {fleet_file.resolve()} is fleet 'dbfleet'" in err
    assert "belong to fleet 'ncfleet' (fleet file /f/ncfleet.yaml)" in err


def test_commands_work_on_their_own_fleets_stacks_and_on_stacks_of_older_dbfleets(
    backend: Path, fleet_file: Path, fake_run: FakeRun, capsys
) -> None:
    checkpoint(backend, "accounts-us", {"secret_path": "dbfleet/dbfleet/us/postgres"})  # older
    checkpoint(backend, "networks-us", owned("dbfleet", "us"))
    assert main(["up", "-q"]) == 0 and fake_run.calls == [(["us"], "up")]


def test_graph_draws_the_file_whoever_the_backend_belongs_to(
    backend: Path, fleet_file: Path, capsys
) -> None:
    checkpoint(backend, "accounts-us", owned("ncfleet", "us"))
    assert main(["graph"]) == 0 and "digraph" in capsys.readouterr().out


def test_a_preview_lists_orphaned_groups_and_exits_2(
    backend: Path, fleet_file: Path, fake_run: FakeRun, capsys, tmp_path: Path
) -> None:
    for layer in LAYERS:
        checkpoint(backend, f"{layer}-us", owned("dbfleet", "us"))
        checkpoint(backend, f"{layer}-eu", owned("dbfleet", "eu"))
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    code = main(["preview", "--markdown", str(md), "--json", str(js)])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert fake_run.calls == [(["us"], "preview")]  # the orphan is not previewed, only listed
    rows = {ln.split()[0]: ln.split()[1] for ln in out.splitlines()[1:] if ln[:1] != " "}
    assert rows["replicas-eu"] == "orphaned" and rows["replicas-us"] == "no"
    assert "remove them with: dbfleet destroy eu --yes" in out
    assert "orphaned: group eu; remove it with: dbfleet destroy eu --yes" in err
    doc = json.loads(js.read_text())
    assert doc["exit_code"] == 2
    assert doc["orphaned_groups"]["eu"]["remove"] == "dbfleet destroy eu --yes"
    assert {s["stack"] for s in doc["stacks"] if s["status"] == "orphaned"} == {
        f"{layer}-eu" for layer in LAYERS
    }
    report = md.read_text()
    assert "**Orphaned groups**" in report and "`dbfleet destroy eu --yes`" in report


def test_a_preview_of_some_groups_only_lists_no_orphans(
    backend: Path, fleet_file: Path, fake_run: FakeRun
) -> None:
    fleet_file.write_text(
        FLEET.format(name="dbfleet")
        + "  eu:\n    zone: EU\n    primary: fra\n    regions: {fra: {nodes: 1}}\n"
    )
    checkpoint(backend, "accounts-ap", owned("dbfleet", "ap"))
    assert main(["preview", "us", "-q"]) == 0
    assert main(["preview", "-q", "--layer", "replicas"]) == 0  # ap has no replicas stack
    assert main(["preview", "-q"]) == 2
