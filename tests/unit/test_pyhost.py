"""The Python dbfleet's commands give Pulumi's language host (dbfleet/ops/pyhost.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from dbfleet.ops import pyhost

PLUGIN_QUESTION = ("-m", "pip", "list", "-v", "--format", "json")


def _key(entries: list[dict]) -> set[tuple[str, str, str]]:
    return {(e["name"].lower(), e["version"], e["location"]) for e in entries}


def _wrapper(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "DBFLEET_PYTHON": sys.executable}
    return subprocess.run(
        [str(pyhost.WRAPPER), *args], env=env, capture_output=True, text=True, check=True
    )


def test_the_list_is_what_pip_says_of_the_same_interpreter():
    pip = subprocess.run(
        [sys.executable, *PLUGIN_QUESTION], capture_output=True, text=True, check=True
    )
    from_pip = json.loads(pip.stdout)
    assert any(e["name"] == "pulumi" for e in from_pip)
    assert _key(pyhost.installed()) == _key(from_pip)


def test_the_wrapper_answers_the_plugin_question_without_pip():
    answer = json.loads(_wrapper(*PLUGIN_QUESTION).stdout)
    assert _key(answer) == _key(pyhost.installed())
    # pip is never imported for it: the same question with pip hidden still answers
    hidden = _wrapper(
        "-c",
        "import sys; sys.modules['pip'] = None; import runpy; "
        f"runpy.run_path({str(pyhost.WRAPPER.with_name('pyhost.py'))!r}, "
        "run_name='__main__')",
    )
    assert _key(json.loads(hidden.stdout)) == _key(answer)


def test_the_wrapper_runs_everything_else_on_dbfleets_python_unchanged():
    proc = _wrapper("-c", "import sys; print(sys.executable); print(sys.argv[1:])", "a b", "-m")
    assert proc.stdout.splitlines() == [sys.executable, "['a b', '-m']"]
    # one word away from the plugin question is not the plugin question
    other = _wrapper("-m", "pip", "list", "--format", "json")
    assert isinstance(json.loads(other.stdout), list)
    assert os.access(pyhost.WRAPPER, os.X_OK)


def test_an_operators_own_python_command_is_kept():
    env: dict[str, str] = {}
    pyhost.use_for_engine(env)
    assert env == {"PULUMI_PYTHON_CMD": str(pyhost.WRAPPER), "DBFLEET_PYTHON": sys.executable}
    own = {"PULUMI_PYTHON_CMD": "/opt/python/bin/python3"}
    pyhost.use_for_engine(own)
    assert own == {"PULUMI_PYTHON_CMD": "/opt/python/bin/python3"}
