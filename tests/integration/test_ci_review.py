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
# which Vault token the preview ran with (the tests' tokens are made up)
echo "${VAULT_TOKEN:-}" >>"$STUB_LOG.token"
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


# -- one review job per group -----------------------------------------------------------------
BOTH = FLEET.replace("ord: {nodes: 1}", "ord: {nodes: 2}").replace(
    "lhr: {nodes: 1}}", "lhr: {nodes: 2}}"
)


def test_groups_lists_the_affected_groups_for_the_matrix_and_posts_the_summary(
    repo: Path, ci, tmp_path: Path
) -> None:
    run, log, out = ci
    commit(repo, "stacks/fleet.yaml", BOTH)
    gh_out = tmp_path / "github_output"
    proc = run("groups", 0, DBFLEET_REVIEW_DRY_RUN="1", GITHUB_OUTPUT=str(gh_out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == '["us","eu"]'
    assert gh_out.read_text() == 'groups=["us","eu"]\n'
    summary = (out / "comment.md").read_text()
    assert summary.startswith(COMMENT_MARKER + "\n") and "Affected group(s): `us`, `eu`" in summary
    assert not log.exists(), "finding the groups previews nothing"


def test_groups_of_a_docs_change_is_an_empty_matrix_and_says_so(
    repo: Path, ci, tmp_path: Path
) -> None:
    run, _log, out = ci
    commit(repo, "README.md", "docs\n")
    gh_out = tmp_path / "github_output"
    proc = run("groups", 0, DBFLEET_REVIEW_DRY_RUN="1", GITHUB_OUTPUT=str(gh_out))
    assert proc.returncode == 0, proc.stderr
    assert gh_out.read_text() == "groups=[]\n"
    assert "No stack is affected" in (out / "comment.md").read_text()


def test_a_groups_review_previews_that_group_only_with_its_read_only_token(repo: Path, ci) -> None:
    run, log, out = ci
    commit(repo, "stacks/fleet.yaml", BOTH)
    proc = run(
        "pr",
        2,
        DBFLEET_REVIEW_DRY_RUN="1",
        DBFLEET_REVIEW_GROUP="eu",
        DBFLEET_REVIEW_TOKEN="eu-read-only-token",
        VAULT_TOKEN="runner-admin-token",
    )
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().split()[:3] == ["preview", "eu", "--diff"]
    assert len(log.read_text().splitlines()) == 1, "us is another job's"
    # The runner's token is replaced, not kept beside it.
    assert Path(f"{log}.token").read_text() == "eu-read-only-token\n"
    comment = (out / "eu" / "comment.md").read_text()
    assert comment.startswith("<!-- dbfleet-preview eu -->\n") and "stub report" in comment
    assert COMMENT_MARKER not in comment


def test_a_groups_review_without_its_token_fails_in_one_line_before_any_preview(
    repo: Path, ci
) -> None:
    run, log, out = ci
    commit(repo, "stacks/fleet.yaml", BOTH)
    # The runner's own token is there, and must not be used in its place.
    proc = run(
        "pr", 2, DBFLEET_REVIEW_DRY_RUN="1", DBFLEET_REVIEW_GROUP="us", VAULT_TOKEN="runner-admin"
    )
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ci_review:")]
    assert len(lines) == 1 and "DBFLEET_REVIEW_TOKEN" in lines[0]
    assert "`dbfleet token us --read-only`" in lines[0]
    assert not log.exists() and not (out / "us").exists()


def test_a_group_the_change_does_not_touch_gets_a_no_stack_comment(repo: Path, ci) -> None:
    run, log, out = ci
    commit(repo, "stacks/fleet.yaml", FLEET.replace("ord: {nodes: 1}", "ord: {nodes: 2}"))
    proc = run(
        "pr", 0, DBFLEET_REVIEW_DRY_RUN="1", DBFLEET_REVIEW_GROUP="eu", DBFLEET_REVIEW_TOKEN="t"
    )
    assert proc.returncode == 0, proc.stderr
    assert not log.exists()
    comment = (out / "eu" / "comment.md").read_text()
    assert comment.startswith("<!-- dbfleet-preview eu -->") and "No stack of group eu" in comment
