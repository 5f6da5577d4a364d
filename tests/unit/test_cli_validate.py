"""`dbfleet validate`: exit codes, output, and the corpus of broken fleet files."""

from __future__ import annotations

import io
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from dbfleet.model.spec import FleetError, load_fleet
from dbfleet.ops import cli
from dbfleet.ops.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLEET = ROOT / "stacks" / "fleet.yaml"
BAD = ROOT / "tests" / "data" / "bad_fleets"
EXPECTED: dict[str, str] = yaml.safe_load((BAD / "expected.yaml").read_text(encoding="utf-8"))
BAD_FILES = sorted(p.name for p in BAD.glob("*.yaml") if p.name != "expected.yaml")

DEFAULT_SUMMARY = "valid — 2 groups (eu: fra*, lhr, arn; us: iad*, ord, sjc), 6 regions, 6 nodes"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_default_fleet_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", str(DEFAULT_FLEET))
    assert (code, err) == (0, "")
    assert out == f"{DEFAULT_FLEET}: {DEFAULT_SUMMARY}\n"


def test_summary_puts_the_primary_first_and_counts_singular(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "solo.yaml"
    path.write_text("groups:\n  solo:\n    zone: EU\n    primary: ams\n    regions: {ams: {}}\n")
    assert (
        run(capsys, "validate", str(path))[1]
        == f"{path}: valid — 1 group (solo: ams*), 1 region, 1 node\n"
    )
    path.write_text(
        "groups:\n  br:\n    zone: BR\n    primary: gru\n"
        "    regions: {gig: {nodes: 2}, gru: {nodes: 3}}\n"
    )
    assert (
        run(capsys, "validate", str(path))[1]
        == f"{path}: valid — 1 group (br: gru*, gig), 2 regions, 5 nodes\n"
    )


def test_invalid_file_prints_one_line_per_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "colour: blue\n"
        "groups:\n"
        "  eu:\n"
        "    zone: EU\n"
        "    primary: fra\n"
        "    regions: {fra: {nodes: 0}, sjc: {}}\n"
    )
    code, out, err = run(capsys, "validate", str(path))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "colour: unknown key (allowed: name, target, network, ssh, firewall, pooling, limits, tls, groups)",
        "groups.eu.regions.fra.nodes: must be at least 1, got 0",
    ]


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert (code, out) == (1, "")
    assert err == f"{tmp_path / 'nope.yaml'}: file not found\n"


def test_without_file_uses_dbfleet_spec(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "env.yaml"
    path.write_text("groups: {}\n")
    monkeypatch.setenv("DBFLEET_SPEC", str(path))
    assert run(capsys, "validate") == (1, "", "groups: must not be empty\n")
    monkeypatch.delenv("DBFLEET_SPEC")
    code, out, _ = run(capsys, "validate")
    assert code == 0 and out.endswith(f"{DEFAULT_SUMMARY}\n")


def test_unexpected_exception_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(path: object) -> None:
        raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(cli, "load_fleet", boom)
    code, out, err = run(capsys, "validate", str(DEFAULT_FLEET))
    assert (code, out) == (1, "")
    assert err == f"{DEFAULT_FLEET}: internal error: RuntimeError: boom with a second line\n"


def test_usage_errors_return_instead_of_exiting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["validate", "--help"]) == 0
    assert "FILE" in capsys.readouterr().out


def test_output_survives_a_terminal_that_cannot_encode_it() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    cli._emit(stream, "fleet.yaml: valid — groups.europä")
    stream.flush()
    assert stream.buffer.getvalue() == b"fleet.yaml: valid \\u2014 groups.europ\\xe4\n"


def test_python_dash_m_dbfleet_exits_with_the_code_of_main(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m dbfleet` runs dbfleet/__main__.py, in-process here; the real process
    is started in tests/integration/test_cli_process.py."""
    monkeypatch.chdir(ROOT)

    def dash_m(*argv: str) -> tuple[object, str, str]:
        monkeypatch.setattr(sys, "argv", ["dbfleet", *argv])
        with pytest.raises(SystemExit) as exc:
            runpy.run_module("dbfleet", run_name="__main__")
        out, err = capsys.readouterr()
        return exc.value.code, out, err

    assert dash_m("validate", "stacks/fleet.yaml") == (
        0,
        f"stacks/fleet.yaml: {DEFAULT_SUMMARY}\n",
        "",
    )
    assert dash_m("validate", str(BAD / "region_wrong_zone.yaml")) == (
        1,
        "",
        "groups.eu.regions.sjc: region sjc is in zone US, group eu is pinned to zone EU\n",
    )


# --------------------------------------------------------------------------- broken fleet corpus


def test_corpus_is_complete() -> None:
    assert len(BAD_FILES) >= 30
    assert sorted(EXPECTED) == BAD_FILES


@pytest.mark.parametrize("name", BAD_FILES)
def test_broken_fleet_is_rejected(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = BAD / name
    # load_fleet must raise FleetError: seen on the CLI's own call, so each file is
    # parsed once (yaml_nested_too_deep.yaml alone takes a quarter of a second).
    loaded: list[Path] = []
    raised: list[BaseException] = []

    def spy(p: Path) -> object:
        loaded.append(p)
        try:
            return load_fleet(p)
        except BaseException as exc:
            raised.append(exc)
            raise

    monkeypatch.setattr(cli, "load_fleet", spy)
    code, out, err = run(capsys, "validate", str(path))
    lines = err.splitlines()
    assert (code, out) == (1, "")
    assert lines, "at least one problem line"
    # Problems of the whole file name the file itself (<file> in expected.yaml).
    want = EXPECTED[name].replace("<file>", str(path))
    assert any(want in line for line in lines), lines
    for line in lines:
        assert ": " in line and "Traceback" not in line and "internal error" not in line
    assert loaded == [path]
    assert len(raised) == 1 and isinstance(raised[0], FleetError), raised


def test_a_relative_fleet_file_reaches_the_engine_as_an_absolute_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the program and the policy pack run in other directories than the operator
    monkeypatch.chdir(tmp_path)
    env = {"DBFLEET_SPEC": "fleets/eu.yaml"}
    cli._absolute_spec(env)
    assert env["DBFLEET_SPEC"] == str(tmp_path / "fleets" / "eu.yaml")
    env = {"DBFLEET_SPEC": "/etc/fleet.yaml"}
    cli._absolute_spec(env)
    assert env["DBFLEET_SPEC"] == "/etc/fleet.yaml"


def test_several_files_are_each_checked_and_every_problem_names_its_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: {}\n")
    missing = tmp_path / "nope.yaml"
    code, out, err = run(capsys, "validate", str(bad), str(DEFAULT_FLEET), str(missing))
    assert code == 1  # one bad file is enough; the others were still checked
    assert out == f"{DEFAULT_FLEET}: {DEFAULT_SUMMARY}\n"
    assert err.splitlines() == [f"{bad}: groups: must not be empty", f"{missing}: file not found"]
    code, out, err = run(capsys, "validate", str(DEFAULT_FLEET), str(DEFAULT_FLEET))
    assert (code, err) == (0, "") and len(out.splitlines()) == 2
