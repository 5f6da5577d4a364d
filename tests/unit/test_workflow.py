"""The GitHub Actions workflow: it parses, and everything it calls exists and is accepted."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dbfleet.ops.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
SCRIPT = ROOT / "scripts" / "ci_review.sh"


def _load(path: Path) -> dict:
    # YAML 1.1 reads a bare `on:` key as True; GitHub reads it as "on".
    doc = yaml.safe_load(path.read_text())
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _steps(doc: dict) -> list[dict]:
    return [step for job in doc["jobs"].values() for step in job.get("steps", [])]


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def test_there_is_a_workflow() -> None:
    assert [p.name for p in WORKFLOWS] == ["dbfleet.yml"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_parses_and_has_its_jobs(path: Path) -> None:
    doc = _load(path)
    assert set(doc["on"]) >= {"pull_request", "push"}
    assert doc["on"]["push"]["branches"] == ["main"]
    jobs = doc["jobs"]
    assert jobs["scope"]["if"] == "github.event_name == 'pull_request'"
    assert jobs["review"]["if"].startswith("github.event_name == 'pull_request'")
    assert jobs["drift"]["if"] == "github.event_name != 'pull_request'"
    assert doc["permissions"]["pull-requests"] == "write"
    for job in jobs.values():
        assert job["steps"] and job["timeout-minutes"] <= 60
        names = [s.get("uses", "").split("@")[0] for s in job["steps"]]
        assert names[0] == "actions/checkout"
        assert any(s.get("run") == "make setup" for s in job["steps"]), "the toolchain is set up"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_and_every_script_and_target_exists(path: Path) -> None:
    targets = _make_targets()
    for step in _steps(_load(path)):
        if "uses" in step:
            assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), step["uses"]
            continue
        for line in step["run"].splitlines():
            words = shlex.split(line)
            if not words:
                continue
            if words[0] == "make":
                assert set(words[1:]) <= targets, f"make target missing: {line}"
            elif words[0] == "bash":
                assert (ROOT / words[1]).is_file(), f"script missing: {words[1]}"
            else:
                pytest.fail(f"unexpected command in {path.name}: {line}")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_referenced_files_exist(path: Path) -> None:
    text = path.read_text()
    for ref in re.findall(r"go-version-file: (\S+)", text) + re.findall(
        r"hashFiles\(([^)]*)\)", text
    ):
        for name in re.findall(r"'([^']+)'", ref) or [ref]:
            assert (ROOT / name).is_file(), name


def _ci_commands() -> list[list[str]]:
    """Every `dbfleet ...` command line in the CI script (variables left as words)."""
    out = []
    for line in SCRIPT.read_text().splitlines():
        line = line.split("||")[0].strip()
        if line.startswith("dbfleet "):
            out.append(
                shlex.split(
                    line.replace('"$@"', "eu").replace('"$md"', "r.md").replace('"$json"', "r.json")
                )
            )
    return out


def test_the_ci_script_calls_dbfleet_with_flags_it_accepts() -> None:
    commands = _ci_commands()
    assert commands == [
        ["dbfleet", "preview", "eu", "--diff", "--markdown", "r.md", "--json", "r.json", "--quiet"]
    ]
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv[1:])
        assert args.command == "preview" and args.diff and args.markdown == "r.md"


def test_the_ci_script_is_valid_shell() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert SCRIPT.stat().st_mode & 0o111, "ci_review.sh is executable"
    if shutil.which("shellcheck"):
        proc = subprocess.run(
            ["shellcheck", "-x", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout


def test_the_review_is_one_job_per_affected_group_each_with_its_own_groups_token() -> None:
    doc = _load(ROOT / ".github" / "workflows" / "dbfleet.yml")
    scope, review = doc["jobs"]["scope"], doc["jobs"]["review"]
    step = next(s for s in scope["steps"] if "ci_review.sh" in s.get("run", ""))
    assert step["run"] == "bash scripts/ci_review.sh groups"
    assert scope["outputs"]["groups"] == f"${{{{ steps.{step['id']}.outputs.groups }}}}"
    assert review["needs"] == "scope" and "needs.scope.outputs.groups != '[]'" in review["if"]
    assert review["strategy"]["matrix"]["group"] == "${{ fromJSON(needs.scope.outputs.groups) }}"
    assert review["strategy"]["fail-fast"] is False
    # The token comes from the group's environment under one name: a job holds its own
    # group's token only. A dynamic secrets[...] would give every job every secret.
    assert review["environment"] == "dbfleet-review-${{ matrix.group }}"
    run = next(s for s in review["steps"] if "ci_review.sh" in s.get("run", ""))
    assert run["run"] == "bash scripts/ci_review.sh pr"
    assert run["env"]["DBFLEET_REVIEW_GROUP"] == "${{ matrix.group }}"
    assert run["env"]["DBFLEET_REVIEW_TOKEN"] == "${{ secrets.DBFLEET_REVIEW_TOKEN }}"
    assert "${{ secrets[" not in (ROOT / ".github" / "workflows" / "dbfleet.yml").read_text()
    upload = next(s for s in review["steps"] if s.get("uses", "").startswith("actions/upload"))
    assert "${{ matrix.group }}" in upload["with"]["name"]
