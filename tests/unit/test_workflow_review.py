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


# -- per-group review ------------------------------------------------------------------------
def test_affected_groups_are_listed_in_the_fleet_files_order_and_one_group_can_be_picked() -> None:
    head = FLEET.replace("ord: {nodes: 1}", "ord: {nodes: 2}").replace(
        "lhr: {nodes: 1}}", "lhr: {nodes: 2}}"
    )
    scope = review.affected(["stacks/fleet.yaml"], base_fleet=FLEET, head_fleet=head)
    assert scope.affected_groups(["us", "eu"]) == ["us", "eu"]
    assert scope.preview_args(["us", "eu"], only="eu") == ["eu"]
    layer = review.affected(["dbfleet/program/layers/proxies.py"], base_fleet=None, head_fleet=None)
    # A group's job previews the same layers the whole review would, for its group only.
    assert layer.preview_args(["us", "eu"], only="us") == ["us", "--layer", "proxies"]
    assert scope.preview_args(["us", "eu"], only="ap") == []
    assert review.Scope().affected_groups(["us", "eu"]) == []


def test_each_group_has_its_own_comment_next_to_the_summary(github: FakeGitHub) -> None:
    transport = review.http_transport("t0ken", github.url)
    summary = review.upsert_comment(transport, "o/r", 5, review.comment_body("## summary"))
    # dbfleet's report may start with the summary's marker: the group's replaces it.
    eu = review.upsert_comment(
        transport, "o/r", 5, review.comment_body(f"{COMMENT_MARKER}\n## eu 1", "eu")
    )
    us = review.upsert_comment(transport, "o/r", 5, review.comment_body("## us 1", "us"))
    again = review.upsert_comment(transport, "o/r", 5, review.comment_body("## eu 2", "eu"))
    assert len({summary[1], eu[1], us[1]}) == 3 and again == ("updated", eu[1])
    bodies = {c["id"]: c["body"] for c in github.comments}
    assert bodies[eu[1]] == "<!-- dbfleet-preview eu -->\n## eu 2"
    assert bodies[us[1]] == "<!-- dbfleet-preview us -->\n## us 1"
    assert bodies[summary[1]] == f"{COMMENT_MARKER}\n## summary"


def test_the_groups_command_prints_the_matrix_and_writes_the_summary(
    repo: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("DBFLEET_SPEC", str(repo / "stacks" / "fleet.yaml"))
    commit(repo, "stacks/fleet.yaml", FLEET.replace("lhr: {nodes: 1}}", "lhr: {nodes: 2}}"))
    summary = tmp_path / "summary.md"
    assert (
        review.main(
            ["groups", "--base", "main", "--repo-dir", str(repo), "--summary", str(summary)]
        )
        == 0
    )
    assert capsys.readouterr().out == '["eu"]\n'
    text = summary.read_text()
    assert text.startswith(COMMENT_MARKER) and "Affected group(s): `eu`" in text
    assert "- stacks/fleet.yaml: group(s) eu changed" in text


def test_the_groups_command_prints_an_empty_matrix_when_nothing_is_affected(
    repo: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("DBFLEET_SPEC", str(repo / "stacks" / "fleet.yaml"))
    commit(repo, "README.md", "docs\n")
    summary = tmp_path / "summary.md"
    assert (
        review.main(
            ["groups", "--base", "main", "--repo-dir", str(repo), "--summary", str(summary)]
        )
        == 0
    )
    assert capsys.readouterr().out == "[]\n"
    assert "**No stack is affected**" in summary.read_text()


def test_the_groups_command_refuses_a_group_name_that_could_not_be_a_group(
    repo: Path, monkeypatch, capsys
) -> None:
    # The names go into job names, environments and paths in CI: only real group names.
    monkeypatch.setenv("DBFLEET_SPEC", str(repo / "stacks" / "fleet.yaml"))
    commit(repo, "stacks/fleet.yaml", FLEET + '  "eu; rm -rf x":\n    zone: EU\n')
    assert review.main(["groups", "--base", "main", "--repo-dir", str(repo)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "is not a DNS label" in out.err
