"""The operator CLI on the real engine, Vault, PostgreSQL and HAProxy.

One fleet of its own (state, Vault paths, fleet name and loopback range apart from
every other test module), driven through `python -m dbfleet` like an operator.
In file order the tests share one fleet and need only one full rollout; each also
sets up what it needs itself (`nothing_deployed`, `deployed`, a stopped replica),
so any one of them runs alone with `pytest -k`:

1. nothing deployed: a preview of an upper layer is blocked with a clear message;
2. accounts + networks of both groups; then a port held by something else makes
   replicas-us fail — us stops there while eu, in parallel, finishes; the next
   `up us` completes;
3. exit codes: 0 when nothing changes; the report of adding a region to eu (2)
   names exactly the stacks and resources that `up` then changes, with no secret;
4. `status` sees a killed replica as down within 10 s;
5. a failing stack makes the preview exit 1 even though another stack has changes;
6. destroy asks for --yes without a terminal, then removes everything in reverse.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from dbfleet import vault
from dbfleet.model.stackname import LAYERS
from tests.integration.conftest import FleetEnv, make_fleet_env, wait_for

GROUPS = ("us", "eu")
STACKS = {f"{layer}-{g}" for g in GROUPS for layer in LAYERS}


@pytest.fixture(scope="module")
def fleet(local_vault) -> Iterator[FleetEnv]:
    fe = make_fleet_env(local_vault, "cli")
    # Test 5 breaks a stack's passphrase salt: this fleet's stacks use the passphrase
    # (per-group Transit keys are test_group_access.py's).
    fe.env["DBFLEET_SECRETS_PROVIDER"] = "passphrase"
    yield fe
    fe.run("destroy", "--yes", "-q", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


def _deployed_stacks(fleet: FleetEnv) -> set[str]:
    """The stacks of this fleet that hold resources."""
    rows = json.loads(fleet.pulumi("stack", "ls", "--json").stdout or "[]")
    return {r["name"] for r in rows if r.get("resourceCount")}


@pytest.fixture
def nothing_deployed(fleet: FleetEnv) -> FleetEnv:
    """The fleet with no stack deployed (a no-op in file order, where it is first)."""
    if _deployed_stacks(fleet):
        fleet.run("destroy", "--yes", "-q")
    return fleet


@pytest.fixture
def deployed(fleet: FleetEnv) -> FleetEnv:
    """Every stack of the fleet deployed (a no-op in file order, where an earlier
    test brought them up)."""
    if _deployed_stacks(fleet) != STACKS:
        fleet.run("up", "-q")
    return fleet


def as_json(proc) -> dict:
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"not JSON ({exc}):\n{proc.stdout}\n{proc.stderr}") from None


def by_stack(doc: dict) -> dict[str, dict]:
    return {s["stack"]: s for s in doc["stacks"]}


def group_secrets(fleet: FleetEnv) -> list[str]:
    client = hvac.Client(url=fleet.env["VAULT_ADDR"], token=fleet.env["VAULT_TOKEN"])
    values: list[str] = []
    for g in GROUPS:
        values += vault.read_group_secrets(
            client, vault.DEFAULT_MOUNT, vault.secret_path(fleet.name, g)
        ).values()
    assert len(values) == len(GROUPS) * len(vault.GENERATED_KEYS)  # passwords, backup passphrase
    return values


# 1 ------------------------------------------------------------------------------------------
def test_a_preview_of_a_layer_whose_upstream_is_not_deployed_says_so(
    nothing_deployed: FleetEnv,
) -> None:
    fleet = nothing_deployed
    proc = fleet.run("preview", "us", "--layer", "replicas", "--json", "-", check=False)
    assert proc.returncode == 1
    (r,) = as_json(proc)["stacks"]
    assert r["status"] == "blocked"
    assert r["error"].startswith(
        "accounts-us, networks-us are not deployed yet, and replicas-us reads their outputs"
    )
    assert "unknown stack" not in proc.stdout + proc.stderr
    assert fleet.pulumi("stack", "ls", "--json").stdout.strip() == "[]", "a preview created a stack"


# 2 ------------------------------------------------------------------------------------------
def test_a_failure_stops_its_group_at_that_stack_while_the_other_group_finishes(
    nothing_deployed: FleetEnv,
) -> None:
    fleet = nothing_deployed
    first = as_json(fleet.run("up", "--layer", "accounts", "--layer", "networks", "--json"))
    rows = by_stack(first)
    assert {s: r["status"] for s, r in rows.items()} == {
        f"{layer}-{g}": "applied" for g in GROUPS for layer in ("accounts", "networks")
    }
    for g in GROUPS:
        assert rows[f"accounts-{g}"]["finished"] <= rows[f"networks-{g}"]["started"], g
    iad = fleet.outputs("networks-us")["regions"]["iad"]
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind((iad["host"], iad["node_ports"][0]))  # us's primary cannot listen
    squatter.listen()
    try:
        # The layers below are deployed and unchanged: leaving them out saves time.
        proc = fleet.run("up", "--layer", "replicas", "--layer", "proxies", "--json", check=False)
    finally:
        squatter.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = as_json(proc)
    rows = by_stack(doc)
    assert {s: r["status"] for s, r in rows.items()} == {
        "replicas-us": "failed",
        "proxies-us": "not started",
        "replicas-eu": "applied",
        "proxies-eu": "applied",
    }
    assert doc["failed_stacks"] == ["replicas-us"]
    assert "patroni.sh" in rows["replicas-us"]["error"]
    assert rows["proxies-us"]["started"] is None
    # each group in order; the two groups at the same time
    assert rows["replicas-eu"]["finished"] <= rows["proxies-eu"]["started"]
    us, eu = rows["replicas-us"], rows["replicas-eu"]
    assert us["started"] < eu["finished"] and eu["started"] < us["finished"], (
        "replicas-us and -eu did not overlap"
    )
    # the progress on stderr named the stacks and resources as they ran
    assert "replicas-eu" in proc.stderr and "created" in proc.stderr

    again = fleet.run("up", "us")
    lines = {
        ln.split()[0]: ln
        for ln in again.stdout.splitlines()
        if ln.startswith(tuple(f"{x}-us" for x in LAYERS))
    }
    assert "unchanged" in lines["accounts-us"] and "unchanged" in lines["networks-us"]
    assert "applied" in lines["replicas-us"] and "applied" in lines["proxies-us"]
    assert set(fleet.outputs("proxies-us")["read_endpoints"]) == {"iad", "ord", "sjc"}


# 3 ------------------------------------------------------------------------------------------
def test_a_preview_with_nothing_to_do_exits_0(deployed: FleetEnv) -> None:
    fleet = deployed
    # Policies are exercised by the review preview below; here only the exit code matters.
    proc = fleet.run("preview", "--no-policies", "--json", "-", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = as_json(proc)
    assert {s["status"] for s in doc["stacks"]} == {"no changes"} and len(doc["stacks"]) == 8


def test_the_report_of_adding_a_region_names_exactly_what_up_changes(
    deployed: FleetEnv, tmp_path: Path
) -> None:
    fleet = deployed
    original = fleet.spec.read_text()
    fleet.write_fleet(
        original.replace(
            "      arn: {nodes: 1}\n", "      arn: {nodes: 1}\n      ams: {nodes: 1}\n"
        )
    )
    # A failure before `up` applied ams leaves the file as it was, for the next tests.
    try:
        md, js = tmp_path / "preview.md", tmp_path / "preview.json"
        proc = fleet.run("preview", "--diff", "--markdown", str(md), "--json", str(js), check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        doc = json.loads(js.read_text())
        rows = by_stack(doc)
        assert doc["changed_stacks"] == ["networks-eu", "replicas-eu", "proxies-eu"]
        assert not any(
            r["resources"] for s, r in rows.items() if s.endswith("-us") or s == "accounts-eu"
        )

        def ops(stack: str, op: str) -> set[str]:
            return {r["name"] for r in rows[stack]["resources"] if r["op"] == op}

        assert {r["op"] for s in doc["changed_stacks"] for r in rows[s]["resources"]} <= {
            "create",
            "update",
        }
        # a region brings its node and its etcd member, each with its certificate; every
        # node learns the new member, and the group's leadership the new node
        assert ops("replicas-eu", "create") == {
            "ams-0",
            "ams-0-server",
            "ams-0-tls",
            "etcd-ams",
            "etcd-ams-etcd",
            "etcd-ams-tls",
        }
        assert {"fra-0-server", "lhr-0-server", "arn-0-server", "leader-leader"} <= ops(
            "replicas-eu", "update"
        )
        # every node's certificate names the new region's proxy address too (TLS passes
        # through HAProxy: a client dialling ams's proxy verifies whichever node answers)
        assert {"fra-0-tls", "lhr-0-tls", "arn-0-tls"} <= ops("replicas-eu", "update")
        fra = next(r for r in rows["replicas-eu"]["resources"] if r["name"] == "fra-0-server")
        etcd = next(d for d in fra["diffs"] if d["path"] == "environment.ETCD_HOSTS")
        assert len(etcd["new"].split()) == len(etcd["old"].split()) + 1, etcd
        # a region brings its proxy and its pooler; the other regions' poolers are untouched
        assert ops("proxies-eu", "create") == {
            "ams",
            "ams-haproxy",
            "ams-pool",
            "ams-pool-pgbouncer",
            "ams-pool-tls",
        }
        assert ops("proxies-eu", "update") == {"fra-haproxy", "lhr-haproxy", "arn-haproxy"}
        assert {c["path"] for c in rows["networks-eu"]["output_changes"]} >= {
            "regions.ams",
            "nearest.ams",
        }

        text = md.read_text()
        assert [ln for ln in text.splitlines() if ln.startswith("### ")] == [
            "### `networks-eu` — changes",
            "### `replicas-eu` — changes",
            "### `proxies-eu` — changes",
        ]
        for name in ("ams-0-server", "ams-haproxy", "fra-haproxy", "fra-0-server"):
            assert f"`{name}`" in text
        assert "[!CAUTION]" not in text  # nothing is replaced or deleted
        assert "secret_environment: [secret]" in text
        secrets = group_secrets(fleet)
        for output in (text, js.read_text(), proc.stdout, proc.stderr):
            assert not any(v in output for v in secrets), "a Vault password is in the report"

        # What the preview announced is what `up` does.
        up = as_json(fleet.run("up", "eu", "--json"))
        applied = {s["stack"]: s["changes"] for s in up["stacks"] if s["status"] == "applied"}
        previewed = {s: rows[s]["changes"] for s in doc["changed_stacks"] if rows[s]["changes"]}
        assert applied == previewed
        assert "ams" in fleet.outputs("proxies-eu")["read_endpoints"]
    except BaseException:
        if "ams" not in fleet.outputs("networks-eu")["regions"]:
            fleet.write_fleet(original)
        raise


# 4 ------------------------------------------------------------------------------------------
def _status(fleet: FleetEnv) -> tuple[int, dict]:
    proc = fleet.run("status", "eu", "--json", check=False)
    return proc.returncode, as_json(proc)["groups"][0]


def _kill_node(fleet: FleetEnv, node: str) -> None:
    """SIGKILLs a node's Patroni and postmaster (if they run: Patroni would restart a
    postmaster killed alone) and waits until the postmaster is gone."""
    node_dir = Path(fleet.outputs("accounts-eu")["data_root"]) / node
    try:
        os.kill(int((node_dir / "run" / "patroni.pid").read_text().split()[0]), signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass  # not running
    pidfile = node_dir / "pgdata" / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        return  # not running
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, f"{node}'s postmaster to exit")


def test_status_reports_a_stopped_replica_down_within_10_s(deployed: FleetEnv) -> None:
    fleet = deployed
    code, eu = _status(fleet)
    assert code == 0 and eu["healthy"], eu
    nodes = {n["name"]: n for n in eu["nodes"]}
    assert nodes["fra-0"]["role"] == "primary"
    assert all(
        n["role"] == "replica" and n["lag_bytes"] is not None
        for k, n in nodes.items()
        if k != "fra-0"
    )
    assert all(b["ok"] for p in eu["proxies"] for b in p["backends"])

    _kill_node(fleet, "lhr-0")
    t0 = time.monotonic()

    def lhr_down() -> dict | None:
        code, g = _status(fleet)
        node = next(n for n in g["nodes"] if n["name"] == "lhr-0")
        backends = [b for p in g["proxies"] for b in p["backends"] if b["server"] == "lhr-0"]
        if code == 3 and not node["up"] and backends and not any(b["up"] for b in backends):
            return g
        return None

    g = wait_for(lhr_down, 10, "status to show lhr-0 down, in the node list and in every proxy")
    assert time.monotonic() - t0 < 10
    assert not g["healthy"]
    assert all(n["up"] for n in g["nodes"] if n["name"] != "lhr-0")
    text = fleet.run("status", "eu", check=False).stdout
    assert any(ln.split()[:1] == ["lhr-0"] and "DOWN" in ln for ln in text.splitlines()), text


# 5 ------------------------------------------------------------------------------------------
def test_an_error_in_one_stack_wins_over_changes_in_another(deployed: FleetEnv) -> None:
    fleet = deployed
    # A stopped lhr-0 (in file order, the previous test stopped it already) gives
    # replicas-eu drift to repair. A salt that does not match the passphrase makes
    # replicas-us fail to open its state.
    _kill_node(fleet, "lhr-0")
    config = fleet.project / "stacks" / "Pulumi.replicas-us.yaml"
    saved = config.read_text()
    head, rest = saved.split("encryptionsalt: v1:", 1)
    tail = rest.split(":", 1)[1]
    config.write_text(f"{head}encryptionsalt: v1:{base64.b64encode(os.urandom(8)).decode()}:{tail}")
    try:
        t0 = time.monotonic()
        proc = fleet.run(
            "preview",
            "--layer",
            "replicas",
            "--no-policies",
            "--json",
            "-",
            check=False,
            timeout=300,
        )
        took = time.monotonic() - t0
    finally:
        config.write_text(saved)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = by_stack(as_json(proc))
    assert (
        rows["replicas-us"]["status"] == "failed" and "passphrase" in rows["replicas-us"]["error"]
    )
    assert rows["replicas-eu"]["status"] == "changes"
    drift = {r["name"]: r for r in rows["replicas-eu"]["resources"]}
    assert drift["lhr-0-server"]["drift"] is True
    assert took < 120, "the preview did not return promptly after the failure"

    repaired = fleet.run("up", "eu", "--layer", "replicas", "-q")
    assert "applied" in next(
        ln for ln in repaired.stdout.splitlines() if ln.startswith("replicas-eu")
    )
    code, _ = _status(fleet)
    assert code in (0, 3)  # lag settles on its own; the node itself is back:
    wait_for(lambda: _status(fleet)[0] == 0, 15, "eu to be healthy again after the repair")


# 6 ------------------------------------------------------------------------------------------
def test_destroy_asks_for_yes_then_removes_everything_in_reverse(deployed: FleetEnv) -> None:
    fleet = deployed
    refused = fleet.run("destroy", check=False, input="")
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    data_root = fleet.home / "data"
    assert any(data_root.iterdir())
    doc = as_json(fleet.run("destroy", "--yes", "--json"))
    rows = by_stack(doc)
    assert {r["status"] for r in rows.values()} == {"destroyed"}
    for g in GROUPS:
        order = sorted((rows[f"{layer}-{g}"]["started"], layer) for layer in LAYERS)
        assert [layer for _, layer in order] == list(reversed(LAYERS))
    assert [p for p in data_root.rglob("*")] == []
    again = as_json(fleet.run("destroy", "--yes", "--json"))
    assert {s["status"] for s in again["stacks"]} == {"absent"}
