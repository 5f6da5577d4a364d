"""The CI review: which stacks a change affects, the one PR comment, and scripts/ci_review.sh."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dbfleet import review
from dbfleet.review import COMMENT_MARKER

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["accounts", "networks", "replicas", "proxies"]

FLEET = """\
groups:
  us:
    zone: US
    primary: iad
    regions: {iad: {nodes: 1}, ord: {nodes: 1}}
  eu:
    zone: EU
    primary: fra
    regions: {fra: {nodes: 1}, lhr: {nodes: 1}}
"""


# -- which stacks ---------------------------------------------------------------------------
def test_a_group_change_in_the_fleet_file_affects_that_group_only() -> None:
    head = FLEET.replace("lhr: {nodes: 1}}", "lhr: {nodes: 1}, ams: {nodes: 1}}")
    scope = review.affected(["stacks/fleet.yaml"], base_fleet=FLEET, head_fleet=head)
    assert scope.groups == {"eu"} and scope.layers is None
    assert scope.preview_args(["us", "eu"]) == ["eu"]


def test_fleet_wide_settings_affect_every_group() -> None:
    scope = review.affected(
        ["stacks/fleet.yaml"],
        base_fleet=FLEET,
        head_fleet="network: {cidr: 127.9.0.0/16}\n" + FLEET,
    )
    assert scope.groups is None and scope.preview_args(["us", "eu"]) == []
    assert scope.reasons == ["stacks/fleet.yaml: fleet-wide settings changed (network)"]
    assert not scope.empty


def test_a_removed_group_is_named_but_not_previewed() -> None:
    head = FLEET.split("  eu:")[0]
    scope = review.affected(["stacks/fleet.yaml"], base_fleet=FLEET, head_fleet=head)
    assert scope.removed_groups == ["eu"] and scope.empty
    assert "dbfleet destroy eu" in scope.reasons[-1]


def test_a_layer_module_affects_that_layer_and_the_layers_that_read_it() -> None:
    scope = review.affected(["dbfleet/layers/replicas.py"], base_fleet=FLEET, head_fleet=FLEET)
    assert scope.groups is None and scope.layers == {"replicas"}
    assert scope.preview_args(["us", "eu"]) == ["--layer", "replicas", "--layer", "proxies"]


def test_a_stack_config_file_affects_that_stack() -> None:
    scope = review.affected(["stacks/Pulumi.networks-us.yaml"], base_fleet=FLEET, head_fleet=FLEET)
    assert scope.preview_args(["us", "eu"]) == [
        "us",
        "--layer",
        "networks",
        "--layer",
        "replicas",
        "--layer",
        "proxies",
    ]


@pytest.mark.parametrize(
    "path",
    [
        "components/proxy.py",
        "components/scripts/haproxy.sh",
        "dbfleet/vault.py",
        "Pulumi.yaml",
        "requirements.lock",
        "policies/rules/secrets.py",
        "dbfleet/layers/context.py",
    ],
)
def test_program_code_affects_every_stack(path: str) -> None:
    scope = review.affected([path], base_fleet=FLEET, head_fleet=FLEET)
    assert scope.groups is None and scope.layers is None


@pytest.mark.parametrize(
    "path",
    [
        "README.md",
        "tests/unit/test_x.py",
        ".github/workflows/dbfleet.yml",
        "dbfleet/ops.py",
        "dbfleet/report.py",
        "scripts/setup.sh",
        "Makefile",
    ],
)
def test_docs_tests_ci_and_operator_code_affect_no_stack(path: str) -> None:
    assert review.affected([path], base_fleet=FLEET, head_fleet=FLEET).empty


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "stacks").mkdir(parents=True)
    (r / "stacks" / "fleet.yaml").write_text(FLEET)
    (r / "README.md").write_text("x\n")
    _git(r, "init", "-q", "-b", "main")
    _git(r, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(r, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    _git(r, "checkout", "-qb", "change")
    return r


def _commit(repo: Path, path: str, text: str) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "change")


def test_git_scope_compares_with_the_merge_base(repo: Path) -> None:
    _commit(repo, "stacks/fleet.yaml", FLEET.replace("ord: {nodes: 1}", "ord: {nodes: 2}"))
    scope = review.git_scope("main", repo)
    assert scope.groups == {"us"}


# -- the comment ----------------------------------------------------------------------------
class FakeGitHub:
    """Just enough of the issue-comments API, on a local port."""

    def __init__(self) -> None:
        self.comments: list[dict] = [{"id": 7, "body": "LGTM"}]
        self.requests: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, code: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path))
                assert self.headers["Authorization"] == "Bearer t0ken"
                self._send(200, fake.comments)

            def _body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def do_POST(self) -> None:
                fake.requests.append(("POST", self.path))
                c = {"id": 100 + len(fake.comments), "body": self._body()["body"]}
                fake.comments.append(c)
                self._send(201, c)

            def do_PATCH(self) -> None:
                fake.requests.append(("PATCH", self.path))
                cid = int(self.path.rsplit("/", 1)[1])
                c = next(c for c in fake.comments if c["id"] == cid)
                c["body"] = self._body()["body"]
                self._send(200, c)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    gh = FakeGitHub()
    yield gh
    gh.close()


def test_the_comment_is_created_once_then_updated(github: FakeGitHub) -> None:
    transport = review.http_transport("t0ken", github.url)
    first = review.upsert_comment(transport, "o/r", 5, review.comment_body("## report 1"))
    second = review.upsert_comment(transport, "o/r", 5, review.comment_body("## report 2"))
    assert first[0] == "created" and second == ("updated", first[1])
    ours = [c for c in github.comments if COMMENT_MARKER in c["body"]]
    assert len(ours) == 1 and ours[0]["body"].endswith("## report 2")
    assert [m for m, _ in github.requests] == ["GET", "POST", "GET", "PATCH"]
    assert github.requests[0][1] == "/repos/o/r/issues/5/comments?per_page=100&page=1"


def test_a_long_report_is_cut_to_what_github_accepts() -> None:
    body = review.comment_body("x" * 100_000)
    assert (
        len(body) <= review.MAX_COMMENT and body.startswith(COMMENT_MARKER) and "truncated" in body
    )


def test_pr_number_from_the_event(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 42}}))
    assert review.pr_number(str(event)) == 42
    assert review.pr_number(str(tmp_path / "none.json")) is None


# -- scripts/ci_review.sh end to end, with a stand-in `dbfleet` ------------------------------
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
    _commit(
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
    _commit(repo, "README.md", "better docs\n")
    proc = run("pr", 0, DBFLEET_REVIEW_DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    assert not log.exists()
    assert "No stack is affected" in (out / "comment.md").read_text()


def test_ci_review_fails_when_the_preview_fails_but_still_comments(
    repo: Path, ci, github: FakeGitHub, tmp_path: Path
) -> None:
    run, _log, _out = ci
    _commit(repo, "stacks/fleet.yaml", FLEET.replace("ord: {nodes: 1}", "ord: {nodes: 2}"))
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
    _commit(repo, "README.md", "docs\n")
    proc = run("pr", 0, DBFLEET_REVIEW_DRY_RUN="1", DBFLEET_BASE_REF="origin/nope")
    assert proc.returncode != 0
    assert "origin/nope" in proc.stderr
    assert not log.exists() and not (out / "comment.md").exists()
