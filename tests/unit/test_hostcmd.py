"""HostScriptProvider: which input changes update, which replace (delete a data
directory, then create it again), drift from `check`; and how a script and the
files it uses are shipped to a host as one program."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components import hostcmd, scram
from components.hostcmd import (
    DRIFT_EXIT_CODE,
    HostScriptProvider,
    script_text,
)

SCRIPTS = sorted(p.name for p in hostcmd.SCRIPTS_DIR.glob("*.sh") if not p.name.endswith("lib.sh"))
# The scripts that run PostgreSQL themselves (Patroni's node script), and so carry pg_lib.sh.
PG_SCRIPTS = ("patroni.sh",)

OLDS: dict[str, Any] = {
    "name": "fra-0-server",
    "connection": {"kind": "local", "host": "localhost", "user": "", "port": 22},
    "script": "patroni.sh",
    "script_sha": "a" * 64,
    "environment": {"NODE_DIR": "/srv/d/fra-0", "RUN_AS": "dbfleet-eu", "PG_PORT": "5432"},
    "secret_environment": {"PG_APP_PASSWORD": "old-Secret"},
    "replace_on_env": ["NODE_DIR", "RUN_AS"],
    "check_drift": False,
    "timeout_s": 600,
    "summary": "patroni.sh: fra-0 running",
}


def news(**over: Any) -> dict[str, Any]:
    props = {k: v for k, v in OLDS.items() if k != "summary"}
    props.update(over)
    return props


def env(**over: str) -> dict[str, str]:
    return {**OLDS["environment"], **over}


@pytest.fixture
def probe(monkeypatch):
    """run_script replaced: records each call, answers `check` with a chosen exit code."""
    calls: list[tuple[Any, ...]] = []
    answer = {"code": 0}

    def fake_run_script(connection, script, action, environment, secrets, timeout_s=300):
        calls.append((script, action, environment, secrets, timeout_s))
        if isinstance(answer["code"], BaseException):
            raise answer["code"]
        return subprocess.CompletedProcess([], answer["code"], "", "")

    monkeypatch.setattr(hostcmd, "run_script", fake_run_script)
    return calls, answer


@pytest.mark.parametrize(
    ("new", "changes", "replaces"),
    [
        pytest.param(news(), False, [], id="no change"),
        pytest.param(news(script_sha="b" * 64), True, [], id="script edited: update"),
        pytest.param(news(environment=env(PG_PORT="5433")), True, [], id="plain env: update"),
        pytest.param(
            news(secret_environment={"PG_APP_PASSWORD": "new-Secret"}),
            True,
            [],
            id="rotated secret: update",
        ),
        pytest.param(
            news(environment=env(NODE_DIR="/srv/d/fra-1")),
            True,
            ["environment"],
            id="replace_on_env var: replace",
        ),
        pytest.param(
            news(environment=env(RUN_AS="other")),
            True,
            ["environment"],
            id="second replace_on_env var: replace",
        ),
        pytest.param(
            news(environment={k: v for k, v in env().items() if k != "NODE_DIR"}),
            True,
            ["environment"],
            id="replace_on_env var removed: replace",
        ),
        pytest.param(
            news(connection={**OLDS["connection"], "host": "db2"}),
            True,
            ["connection"],
            id="other host: replace",
        ),
        pytest.param(news(name="fra-9-server"), True, ["name"], id="renamed: replace"),
        pytest.param(
            news(environment=env(NODE_DIR="/x"), connection={**OLDS["connection"], "port": 2}),
            True,
            ["connection"],
            id="identity inputs named, not the env",
        ),
        pytest.param(
            news(timeout_s=30, replace_on_env=["NODE_DIR"]),
            False,
            [],
            id="how the provider runs, not what the host holds: no change",
        ),
    ],
)
def test_diff(probe, new, changes, replaces):
    calls, _ = probe
    result = HostScriptProvider().diff("id", OLDS, new)
    assert (result.changes, result.replaces) == (changes, replaces)
    # A replacement always removes the old first: two nodes must never share a port.
    assert result.delete_before_replace is True
    assert calls == [], "check_drift is off: the host is not asked"


@pytest.mark.parametrize("before", ["pg_primary.sh", "pg_replica.sh"])
def test_a_node_deployed_before_patroni_is_updated_in_place(probe, before):
    # Same name and data directory, another script: Patroni takes the node over
    # (an update); a replacement would delete its data directory first.
    calls, _ = probe
    result = HostScriptProvider().diff("id", {**OLDS, "script": before}, news())
    assert (result.changes, result.replaces) == (True, [])
    assert calls == []


def test_keys_an_older_hostscript_stored_cause_no_change(probe):
    # State written by an older HostScript may hold keys it no longer registers
    # (`triggers`, `replace_on`): deployed stacks must not update or replace for them.
    olds = {**OLDS, "triggers": {"x": "1"}, "replace_on": ["environment", "script"]}
    result = HostScriptProvider().diff("id", olds, news())
    assert (result.changes, result.replaces) == (False, [])


def test_replace_on_env_of_the_new_inputs_decides(probe):
    # A variable becomes an identity when the component starts to list it.
    result = HostScriptProvider().diff(
        "id", {**OLDS, "replace_on_env": []}, news(environment=env(NODE_DIR="/srv/d/x"))
    )
    assert result.replaces == ["environment"]


@pytest.mark.parametrize(
    ("answer", "changes"),
    [
        pytest.param(0, False, id="check passes: no change"),
        pytest.param(DRIFT_EXIT_CODE, True, id="check says drift: update"),
        pytest.param(1, False, id="check fails otherwise: not drift"),
        pytest.param(subprocess.TimeoutExpired("bash", 30), True, id="check hangs: drift"),
        pytest.param(OSError("no bash"), True, id="check cannot run: drift"),
    ],
)
def test_drift_from_check(probe, answer, changes):
    calls, reply = probe
    reply["code"] = answer
    olds = {**OLDS, "check_drift": True}
    result = HostScriptProvider().diff("id", olds, news(check_drift=True))
    assert (result.changes, result.replaces) == (changes, [])
    # The probe runs the deployed script (old inputs, secrets included) with a short deadline.
    assert calls == [("patroni.sh", "check", OLDS["environment"], OLDS["secret_environment"], 30)]


def test_no_probe_when_the_inputs_already_changed(probe):
    calls, reply = probe
    reply["code"] = DRIFT_EXIT_CODE
    result = HostScriptProvider().diff(
        "id", {**OLDS, "check_drift": True}, news(check_drift=True, script_sha="c" * 64)
    )
    assert result.changes and calls == []


def test_check_accepts_a_known_script_unchanged():
    props = news()
    result = HostScriptProvider().check({}, props)
    assert result.inputs is props
    assert result.failures == []


def test_deleting_a_resource_of_a_retired_script_runs_nothing(probe):
    # A stack deployed before Patroni holds a primary fence (pg_fence.sh), which
    # dbfleet no longer declares nor ships: its delete has nothing to undo.
    calls, reply = probe
    reply["code"] = 1  # were the script run, the delete would fail
    fence = {**OLDS, "name": "primary-fence", "script": "pg_fence.sh"}
    assert "pg_fence.sh" in hostcmd.RETIRED_SCRIPTS
    assert HostScriptProvider().delete("id", fence) is None
    assert calls == []


def test_deleting_a_resource_of_a_current_script_runs_its_delete(probe):
    calls, _ = probe
    HostScriptProvider().delete("id", OLDS)
    assert [(script, action) for script, action, *_ in calls] == [("patroni.sh", "delete")]


def test_retired_scripts_are_no_longer_shipped():
    # A retired script that is still shipped would have a delete worth running.
    for name in hostcmd.RETIRED_SCRIPTS:
        assert not (hostcmd.SCRIPTS_DIR / name).exists(), name
        assert name not in SCRIPTS


def test_check_refuses_an_unknown_script():
    result = HostScriptProvider().check({}, news(script="nope.sh"))
    assert [(f.property, f.reason) for f in result.failures] == [
        ("script", "unknown host script nope.sh")
    ]


# --- shipping a script -----------------------------------------------------


def test_drift_exit_code_has_one_definition_in_lib_sh():
    lib = (hostcmd.SCRIPTS_DIR / "lib.sh").read_text()
    assert re.findall(r"^DRIFT_EXIT_CODE=(\d+)$", lib, re.MULTILINE) == [str(DRIFT_EXIT_CODE)]
    for path in hostcmd.SCRIPTS_DIR.glob("*.sh"):
        code = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
        bare = [ln for ln in code if re.search(rf"\bexit {DRIFT_EXIT_CODE}\b|DRIFT=", ln)]
        assert bare == [], f"{path.name} spells the drift exit code itself"


@pytest.mark.parametrize("name", SCRIPTS)
def test_shipped_program_is_whole_and_valid_bash(name):
    text = script_text(name)
    code = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    # Nothing left that would look for a file next to the script on the host.
    assert not [ln for ln in code if "BASH_SOURCE" in ln]
    assert f"SCRIPT_NAME={name}" in code
    syntax = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_postgresql_helpers_travel_only_with_postgresql_scripts(name):
    text = script_text(name)
    lib_at = text.index("# lib.sh - helpers shared by every dbfleet host script")
    has_pg = "# pg_lib.sh - PostgreSQL helpers" in text
    assert has_pg == (name in PG_SCRIPTS)
    if has_pg:
        assert lib_at < text.index("# pg_lib.sh - PostgreSQL helpers")


@pytest.fixture
def components_tree(tmp_path, monkeypatch):
    """A components/ directory of our own, so the shipping rules can be tried on any script."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "lib.sh").write_text('SCRIPT_NAME=$(basename -- "$0")\nLIBVAR=from-lib\n')
    monkeypatch.setattr(hostcmd, "SCRIPTS_DIR", scripts)
    monkeypatch.setattr(hostcmd, "COMPONENTS_DIR", tmp_path)
    return tmp_path


def run_bash(argv: list[str], program: str | None = None) -> str:
    proc = subprocess.run(argv, input=program, capture_output=True, text=True, check=True)
    return proc.stdout


def test_shipped_program_behaves_like_the_script_run_from_its_directory(components_tree):
    # Quotes, dollars and a missing final newline survive the trip.
    tricky = 'it\'s "$HOME" `x` \\n $(no)\nsecond line'
    (components_tree / "helper.py").write_text(tricky)
    (components_tree / "scripts" / "more.sh").write_text("MOREVAR=from-more\n")
    script = components_tree / "scripts" / "t.sh"
    script.write_text(
        'set -eu\n. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"\n'
        '. "$(dirname -- "${BASH_SOURCE[0]}")/more.sh"\n'
        '. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"\n'
        'HELPER=$(<"$(dirname -- "${BASH_SOURCE[0]}")/../helper.py")\n'
        'printf "%s|%s|%s|%s" "$SCRIPT_NAME" "$LIBVAR" "$MOREVAR" "$HELPER"\n'
    )
    from_disk = run_bash(["bash", str(script)])
    shipped = run_bash(["bash", "-s"], script_text("t.sh"))
    assert from_disk == shipped == f"t.sh|from-lib|from-more|{tricky}"
    assert script_text("t.sh").count("LIBVAR=from-lib") == 1, "a library is inlined once"


@pytest.mark.parametrize(
    "line",
    [
        '. "${BASH_SOURCE[0]%/*}/lib.sh"',
        'X=$(cat "$(dirname -- "${BASH_SOURCE[0]}")/../helper.py")',
    ],
)
def test_other_ways_to_reach_a_sibling_file_are_refused(components_tree, line):
    # On a host the file would not be there: refused when the program is built.
    (components_tree / "scripts" / "t.sh").write_text(f"{line}\necho hi\n")
    with pytest.raises(ValueError, match="cannot ship this line"):
        script_text("t.sh")


def test_embedding_a_file_outside_components_is_refused(components_tree):
    (components_tree / "scripts" / "t.sh").write_text(
        'X=$(<"$(dirname -- "${BASH_SOURCE[0]}")/../../etc-passwd")\n'
    )
    with pytest.raises(ValueError, match="not a file under"):
        script_text("t.sh")


def test_scram_module_is_the_text_patroni_leader_runs():
    # What patroni_leader.sh calls is the tested module itself, not a copy.
    assert Path(scram.__file__).read_text() in _unquote_embedded(script_text("patroni_leader.sh"))


def _unquote_embedded(program: str) -> str:
    start = program.index("SCRAM_PY=")
    end = program.index("\n# scram_check VAR")
    return run_bash(["bash", "-c", program[start:end] + '\nprintf "%s" "$SCRAM_PY"'])
