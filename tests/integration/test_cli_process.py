"""`python -m dbfleet` as a real process: a fresh interpreter finds the package,
runs dbfleet/__main__.py and exits with the command's code. What the command does is
unit-tested in-process (tests/unit/test_cli_validate.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "bad_fleets"
DEFAULT_SUMMARY = "valid — 2 groups (eu: fra*, lhr, arn; us: iad*, ord, sjc), 6 regions, 6 nodes"


def test_python_dash_m_dbfleet() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    good = subprocess.run(
        [sys.executable, "-m", "dbfleet", "validate", "stacks/fleet.yaml"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (good.returncode, good.stderr) == (0, "")
    assert good.stdout == f"stacks/fleet.yaml: {DEFAULT_SUMMARY}\n"
    bad = subprocess.run(
        [sys.executable, "-m", "dbfleet", "validate", str(BAD / "region_wrong_zone.yaml")],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert bad.stderr == (
        "groups.eu.regions.sjc: region sjc is in zone US, group eu is pinned to zone EU\n"
    )
