"""`dbfleet failover` over a faked Patroni: refuses with a leader, fails over to the
best candidate without one, and says which fleet file to commit."""

from __future__ import annotations

import base64
import io
import json
import ssl
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from dbfleet import vault
from dbfleet.ops import commands as ops
from dbfleet.ops import failover, identity, rollout, status
from dbfleet.ops.cli import main

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-superuser-pw"


def _member(name: str, role: str, state: str = "running", lag: Any = 0) -> dict:
    m = {"name": name, "role": role, "state": state, "host": "h", "port": 5432, "timeline": 3}
    if role not in status.LEADER_ROLES:
        m["lag"] = lag
    return m


REPLICAS = {
    "primary_region": "fra",
    "secret_mount": "secret",
    "secret_path": "dbfleet/dbfleet/eu/postgres",
    "read_lag_budget": 16 << 20,
    "etcd": {r: f"127.77.{i}.1:2379" for r, i in (("fra", 12), ("lhr", 20), ("arn", 2))},
    "nodes": {
        region: {
            "host": f"127.77.{i}.1",
            "port": 5432,
            "role": "primary" if region == "fra" else "replica",
            "members": [
                {
                    "host": f"127.77.{i}.1",
                    "port": 5432,
                    "role": "primary" if region == "fra" else "replica",
                    "rest_port": 8008,
                }
            ],
        }
        for region, i in (("fra", 12), ("lhr", 20), ("arn", 2))
    },
    "ca_certificate": "-----BEGIN CERTIFICATE-----\nMIIBgroupCA\n-----END CERTIFICATE-----\n",
}


# The client context status.tls_context makes of the replicas stack's CA (faked: no
# real CA in unit tests).
CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class FakePatroni:
    """GET /cluster of every member (one shared view) and POST /failover."""

    def __init__(self, members: list[dict]) -> None:
        self.members = members
        self.posts: list[tuple[str, int, str, str]] = []
        self.answer = (200, 'Successfully failed over to "{}"')

    def http_json(self, url: str, timeout_s: float = 2.0, context: Any = None) -> tuple[int, Any]:
        assert url.startswith("https://") and url.endswith("/cluster"), url
        assert context is CONTEXT, "Patroni is verified against the group's CA"
        return 200, {"members": self.members}

    def post(
        self, host: str, rest_port: int, candidate: str, password: str, context: Any
    ) -> tuple[int, str]:
        assert context is CONTEXT, "the password goes only to a verified member"
        self.posts.append((host, rest_port, candidate, password))
        code, text = self.answer
        if code == 200:
            for m in self.members:
                if m["name"] == candidate:
                    m["role"] = "leader"
                    m.pop("lag", None)
        return code, text.format(candidate)


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text((ROOT / "stacks" / "fleet.yaml").read_text())
    monkeypatch.setenv("DBFLEET_SPEC", str(path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ops, "engine_ready", lambda: None)
    monkeypatch.setattr(identity, "refusal", lambda fleet, spec, stacks=None: None)
    monkeypatch.setattr(
        rollout, "outputs", lambda stack: REPLICAS if stack == "replicas-eu" else {}
    )
    monkeypatch.setattr(vault, "client_from_env", lambda: object())
    monkeypatch.setattr(
        vault,
        "read_group_secrets",
        lambda client, mount, path: (
            {"superuser_password": PASSWORD}
            if (mount, path) == ("secret", "dbfleet/dbfleet/eu/postgres")
            else {}
        ),
    )
    return path


def _patroni(monkeypatch: pytest.MonkeyPatch, members: list[dict]) -> FakePatroni:
    fake = FakePatroni(members)
    monkeypatch.setattr(
        status,
        "tls_context",
        lambda ca: CONTEXT if ca == REPLICAS["ca_certificate"] else pytest.fail(f"CA {ca!r}"),
    )
    monkeypatch.setattr(status, "http_json", fake.http_json)
    monkeypatch.setattr(failover, "post_failover", fake.post)
    # A token for the group is allowed (tests/unit/test_access.py covers refusals).
    monkeypatch.setattr(failover, "group_access", lambda fleet, groups, action: None)
    return fake


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["failover", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _primary(spec: Path) -> str:
    import yaml

    return yaml.safe_load(spec.read_text())["groups"]["eu"]["primary"]


def test_a_group_with_a_healthy_leader_is_pointed_to_a_switchover(
    spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = _patroni(
        monkeypatch,
        [_member("arn-0", "replica"), _member("fra-0", "leader"), _member("lhr-0", "replica")],
    )
    before = spec.read_text()
    code, out, err = _run(capsys, "eu", "--to", "lhr")
    assert code == 1 and fake.posts == []
    assert "group eu has a healthy leader, fra-0: there is nothing to fail over" in err
    assert "set groups.eu.primary in fleet.yaml and run `dbfleet up eu`" in err
    assert "fra-0: leader, running, timeline 3" in out
    assert spec.read_text() == before


def test_without_a_leader_patroni_fails_over_to_the_least_lagging_replica(
    spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # fra-0's Patroni is gone; both replicas lag more than max_lag_on_failover, so
    # Patroni elected nobody.
    fake = _patroni(
        monkeypatch,
        [
            _member("arn-0", "replica", lag=9_000_000),
            _member("lhr-0", "replica", lag=3_000_000),
        ],
    )
    code, out, err = _run(capsys, "eu")
    assert code == 0, err
    assert fake.posts == [("127.77.20.1", 8008, "lhr-0", PASSWORD)]
    assert _primary(spec) == "lhr"
    assert "lhr-0 leads: writes go to lhr" in out
    assert "changed fleet.yaml: groups.eu.primary: fra -> lhr" in out
    assert (
        "commit it: git commit fleet.yaml — a clone or CI job that still holds primary: fra "
        "switches the leader back to fra on its next `dbfleet up eu`"
    ) in out
    assert PASSWORD not in out + err


def test_to_picks_that_regions_replica_whatever_its_lag(
    spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = _patroni(
        monkeypatch,
        [_member("arn-0", "replica", lag=9_000_000), _member("lhr-0", "replica", lag=0)],
    )
    code, _, _ = _run(capsys, "eu", "--to", "arn")
    assert code == 0 and [p[2] for p in fake.posts] == ["arn-0"]
    assert _primary(spec) == "arn"


def test_a_candidate_in_the_declared_region_leaves_the_file_alone(
    spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _patroni(monkeypatch, [_member("fra-0", "replica"), _member("lhr-0", "replica", lag=5)])
    before = spec.read_text()
    code, out, _ = _run(capsys, "eu")
    assert code == 0 and spec.read_text() == before
    assert "fleet.yaml unchanged: groups.eu.primary is already fra" in out
    assert "git commit" not in out


def test_a_failover_patroni_refuses_changes_nothing(
    spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = _patroni(monkeypatch, [_member("lhr-0", "replica")])
    fake.answer = (412, "failover is not possible: no good candidates have been found")
    before = spec.read_text()
    code, out, _ = _run(capsys, "eu")
    assert code == 1 and spec.read_text() == before
    assert "Patroni answered HTTP 412: failover is not possible: no good candidates" in out


def test_no_running_replica_or_no_patroni_is_an_error(
    spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = _patroni(monkeypatch, [_member("lhr-0", "replica", state="stopped")])
    code, _, err = _run(capsys, "eu")
    assert code == 1 and fake.posts == []
    assert "group eu has no leader and no running replica to lead" in err

    def refused(url: str, timeout_s: float = 2.0, context: Any = None) -> tuple[int, Any]:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(status, "http_json", refused)
    code, _, err = _run(capsys, "eu")
    assert code == 1 and "Patroni's view of group eu cannot be read" in err

    code, _, err = _run(capsys, "eu", "--to", "nrt")
    assert code == 1 and "--to nrt: group eu has no region nrt" in err


def test_candidates_prefer_a_synchronous_standby_then_the_least_lag() -> None:
    doc = {
        "members": [
            _member("arn-0", "replica", lag=0),
            _member("fra-0", "replica", lag="unknown"),
            _member("lhr-0", "sync_standby", lag=100),
            _member("lhr-1", "replica", state="starting", lag=0),
            _member("ams-0", "replica", lag=0),
        ]
    }
    order = ["fra-0", "lhr-0", "lhr-1", "arn-0", "ams-0"]
    assert [m["name"] for m in failover.candidates(doc, order)] == [
        "lhr-0",
        "arn-0",
        "ams-0",
        "fra-0",
    ]
    assert [m["name"] for m in failover.candidates(doc, order, "lhr")] == ["lhr-0"]


def test_post_failover_authenticates_in_a_header(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = []

    class Resp(io.BytesIO):
        status = 200

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def urlopen(request, timeout, context):
        assert context is CONTEXT
        sent.append(request)
        if len(sent) == 2:
            raise urllib.error.HTTPError(
                request.full_url, 412, "x", {}, io.BytesIO(b"candidate does not exists")
            )
        return Resp(b'Successfully failed over to "lhr-0"')

    monkeypatch.setattr(failover.urllib.request, "urlopen", urlopen)
    assert failover.post_failover("127.77.20.1", 8008, "lhr-0", PASSWORD, CONTEXT) == (
        200,
        'Successfully failed over to "lhr-0"',
    )
    req = sent[0]
    assert (req.full_url, req.get_method()) == ("https://127.77.20.1:8008/failover", "POST")
    assert json.loads(req.data) == {"candidate": "lhr-0"}
    auth = req.get_header("Authorization")
    assert base64.b64decode(auth.split()[1]).decode() == f"patroni:{PASSWORD}"
    assert PASSWORD not in req.full_url
    assert failover.post_failover("h", 1, "x", PASSWORD, CONTEXT) == (
        412,
        "candidate does not exists",
    )


def test_waiting_for_the_new_leader_gives_up_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    views = iter([_member("lhr-0", "replica"), _member("lhr-0", "leader", state="starting")])
    monkeypatch.setattr(
        status,
        "read_cluster",
        lambda endpoints, pool, context: (
            {"members": [next(views, _member("lhr-0", "leader", state="starting"))]},
            "",
        ),
    )
    now = [0.0]
    pauses: list[float] = []

    def pause(s: float) -> None:
        pauses.append(s)
        now[0] += s

    got = failover.wait_until_leads(
        [], "lhr-0", None, CONTEXT, 2.0, clock=lambda: now[0], pause=pause
    )
    assert got is None and now[0] >= 2.0 and len(pauses) == 4
    monkeypatch.setattr(
        status,
        "read_cluster",
        lambda endpoints, pool, context: ({"members": [_member("lhr-0", "leader")]}, ""),
    )
    assert failover.wait_until_leads(
        [], "lhr-0", None, CONTEXT, 2.0, clock=lambda: now[0], pause=pause
    )
