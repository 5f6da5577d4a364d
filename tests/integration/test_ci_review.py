"""scripts/ci_review.sh end to end, with a stand-in `dbfleet`: the real script, its
`source scripts/env.sh` and its `python -m dbfleet.ops.review` processes in a throw-away
git repository. The pure parts of the review are unit tests
(tests/unit/test_workflow_review.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbfleet.ops.review import COMMENT_MARKER
from tests.review_support import FLEET, FakeGitHub, commit, make_repo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

STUB = """#!/usr/bin/env bash
# stand-in for `dbfleet`: records its arguments, writes the reports it is asked for
echo "$*" >>"$STUB_LOG"
while [ $# -gt 0 ]; do
  case "$1" in
    --markdown) printf '<!-- dbfleet-preview -->\\n## dbfleet preview\\nstub report\\n' >"$2"; shift ;;
    --json) echo '{"exit_code": '"$STUB_CODE"'}' >"$2"; shift ;;
  esac
  shift
done
exit "$STUB_CODE"
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    gh = FakeGitHub()
    yield gh
    gh.close()


@pytest.fixture
def ci(repo: Path, tmp_path: Path):
    for name in ("ci_review.sh", "env.sh", "versions.sh"):
        (repo / "scripts").mkdir(exist_ok=True)
        shutil.copy(ROOT / "scripts" / name, repo / "scripts" / name)
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    (stub_dir / "dbfleet").write_text(STUB)
    (stub_dir / "dbfleet").chmod(0o755)
    log = tmp_path / "stub.log"
    out = tmp_path / "review"

    def run(mode: str, code: int, **extra: str) -> subprocess.CompletedProcess:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DBFLEET_", "GITHUB_", "PULUMI_"))
        }
        env.update(
            PATH=f"{stub_dir}:{Path(sys.executable).parent}:{env['PATH']}",
            PYTHONPATH=str(ROOT),
            DBFLEET_HOME=str(tmp_path / "home"),
            DBFLEET_SPEC=str(repo / "stacks" / "fleet.yaml"),
            DBFLEET_REVIEW_DIR=str(out),
            DBFLEET_BASE_REF="main",
            VAULT_ADDR="http://127.0.0.1:9",
            STUB_LOG=str(log),
            STUB_CODE=str(code),
        )
        env.update(extra)
        env.pop("DBFLEET_LOCAL_VAULT", None)
        return subprocess.run(
            ["bash", str(repo / "scripts" / "ci_review.sh"), mode],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run, log, out


def test_ci_review_previews_the_affected_group_and_writes_the_comment(repo: Path, ci) -> None:
    run, log, out = ci
    commit(
        repo,
        "stacks/fleet.yaml",
        FLEET.replace("lhr: {nodes: 1}}", "lhr: {nodes: 1}, ams: {nodes: 1}}"),
    )
    proc = run("pr", 2, DBFLEET_REVIEW_DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    args = log.read_text().split()
    assert args[:2] == ["preview", "eu"] and "--diff" in args and "--markdown" in args
    assert (out / "comment.md").read_text().startswith(COMMENT_MARKER)
    assert "stub report" in (out / "comment.md").read_text()
    assert "review: stacks/fleet.yaml: group(s) eu changed" in proc.stderr


def test_ci_review_of_a_docs_change_previews_nothing(repo: Path, ci) -> None:
    run, log, out = ci
    commit(repo, "README.md", "better docs\n")
    proc = run("pr", 0, DBFLEET_REVIEW_DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    assert not log.exists()
    assert "No stack is affected" in (out / "comment.md").read_text()


def test_ci_review_fails_when_the_preview_fails_but_still_comments(
    repo: Path, ci, github: FakeGitHub, tmp_path: Path
) -> None:
    run, _log, _out = ci
    commit(repo, "stacks/fleet.yaml", FLEET.replace("ord: {nodes: 1}", "ord: {nodes: 2}"))
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 9}}))
    proc = run(
        "pr",
        1,
        GITHUB_TOKEN="t0ken",
        GITHUB_REPOSITORY="o/r",
        GITHUB_EVENT_PATH=str(event),
        GITHUB_API_URL=github.url,
    )
    assert proc.returncode == 1
    assert "the preview failed (exit 1)" in proc.stderr
    assert ("POST", "/repos/o/r/issues/9/comments") in github.requests


@pytest.mark.parametrize("code", [0, 1, 2])
def test_drift_check_passes_the_preview_exit_code_through(repo: Path, ci, code: int) -> None:
    run, log, _ = ci
    proc = run("drift", code)
    assert proc.returncode == code
    assert log.read_text().split()[:2] == ["preview", "--diff"]
    if code == 2:
        assert "::error::drift" in proc.stderr


def test_ci_review_fails_when_the_base_ref_is_unknown(repo: Path, ci) -> None:
    run, log, out = ci
    commit(repo, "README.md", "docs\n")
    proc = run("pr", 0, DBFLEET_REVIEW_DRY_RUN="1", DBFLEET_BASE_REF="origin/nope")
    assert proc.returncode != 0
    assert "origin/nope" in proc.stderr
    assert not log.exists() and not (out / "comment.md").exists()
