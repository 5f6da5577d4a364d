"""HostScriptProvider: which input changes update, which replace (delete a data
directory, then create it again), drift from `check`; and how a script and the
files it uses are shipped to a host as one program."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from components import hostcmd, scram
from components.hostcmd import (
    DRIFT_EXIT_CODE,
    script_text,
)

SCRIPTS = sorted(p.name for p in hostcmd.SCRIPTS_DIR.glob("*.sh") if not p.name.endswith("lib.sh"))
PG_SCRIPTS = ("pg_primary.sh", "pg_replica.sh", "pg_fence.sh")

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


def test_scram_module_is_the_text_pg_primary_runs():
    # What pg_primary.sh calls is the tested module itself, not a copy.
    assert Path(scram.__file__).read_text() in _unquote_embedded(script_text("pg_primary.sh"))


def _unquote_embedded(program: str) -> str:
    start = program.index("SCRAM_PY=")
    end = program.index("\n# scram_check VAR")
    return run_bash(["bash", "-c", program[start:end] + '\nprintf "%s" "$SCRAM_PY"'])
