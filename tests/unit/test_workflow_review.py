"""The CI review: which stacks a change affects and the one PR comment.

scripts/ci_review.sh itself runs end to end in tests/integration/test_ci_review.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbfleet.ops import review
from dbfleet.ops.review import COMMENT_MARKER
from tests.review_support import FLEET, FakeGitHub, commit, make_repo


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
    # Every group named: an empty argument list means "no stack affected" to ci_review.sh.
    assert scope.groups is None and scope.preview_args(["us", "eu"]) == ["us", "eu"]
    assert scope.reasons == ["stacks/fleet.yaml: fleet-wide settings changed (network)"]
    assert not scope.empty


def test_a_removed_group_makes_the_preview_cover_the_whole_file() -> None:
    # Only a preview of every group of the file lists the removed group's stacks
    # (still deployed) as orphaned; previewing nothing would say "no stack affected".
    head = FLEET.split("  eu:")[0]
    scope = review.affected(["stacks/fleet.yaml"], base_fleet=FLEET, head_fleet=head)
    assert scope.removed_groups == ["eu"] and not scope.empty
    assert scope.preview_args(["us"]) == ["us"]
    assert "dbfleet destroy eu --yes" in scope.reasons[-1]


def test_a_layer_module_affects_that_layer_and_the_layers_that_read_it() -> None:
    scope = review.affected(
        ["dbfleet/program/layers/replicas.py"], base_fleet=FLEET, head_fleet=FLEET
    )
    assert scope.groups is None and scope.layers == {"replicas"}
    assert scope.preview_args(["us", "eu"]) == [
        "us",
        "eu",
        "--layer",
        "replicas",
        "--layer",
        "proxies",
    ]


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
        "dbfleet/program/layers/context.py",
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
        "dbfleet/ops/commands.py",
        "dbfleet/ops/report.py",
        "scripts/setup.sh",
        "Makefile",
    ],
)
def test_docs_tests_ci_and_operator_code_affect_no_stack(path: str) -> None:
    assert review.affected([path], base_fleet=FLEET, head_fleet=FLEET).empty


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def test_git_scope_compares_with_the_merge_base(repo: Path) -> None:
    commit(repo, "stacks/fleet.yaml", FLEET.replace("ord: {nodes: 1}", "ord: {nodes: 2}"))
    scope = review.git_scope("main", repo)
    assert scope.groups == {"us"}


# -- the comment ----------------------------------------------------------------------------
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
