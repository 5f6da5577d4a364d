"""Components: what each registers, with which inputs, and that secrets stay secret;
and the host scripts' rule for what a fleet may take over or remove."""

from __future__ import annotations

import base64
import json
import subprocess

import pulumi
import pytest

from components.account import GroupAccount, GroupAccountArgs
from components.hostcmd import (
    LOCAL,
    SCRIPTS_DIR,
    HostScript,
    HostScriptProvider,
    script_digest,
    script_text,
)
from components.patroni import (
    GroupLeader,
    GroupLeaderArgs,
    PatroniNode,
    PatroniNodeArgs,
    dcs_config,
)
from components.proxy import ProxyServer, RegionProxy, RegionProxyArgs
from components.tls import TlsFiles
from tests.unit.conftest import is_secret, resolve

PASSWORDS = {
    "superuser_password": "su-Secret-1",
    "replication_password": "repl-Secret-2",
    "app_password": "app-Secret-3",
}
DYN = "pulumi-python:dynamic:Resource"


def node_args(**over) -> PatroniNodeArgs:
    base = {
        "connection": LOCAL,
        "run_as": "dbfleet-eu",
        "node_dir": "/srv/dbfleet/eu/fra-0",
        "member": "fra-0",
        "scope": "dbfleet-eu",
        "host": "127.77.12.1",
        "port": 5432,
        "rest_port": 8008,
        "etcd_hosts": ("127.77.12.1:2379", "127.77.20.1:2379"),
        "allowed_hosts": ("127.77.12.1", "127.77.20.1"),
        "dcs": dcs_config("async", 1048576, 100),
        "passwords": pulumi.Output.secret(PASSWORDS),
        "tls": TlsFiles("CERT-PEM", pulumi.Output.secret("KEY-PEM"), "CA-PEM"),
    }
    base.update(over)
    return PatroniNodeArgs(**base)


@pulumi.runtime.test
def test_node_runs_patroni_with_secrets_only_in_secret_env(mocks):
    node = PatroniNode("fra-0", node_args())
    assert resolve(node.rest_port) == 8008
    server = mocks.named("fra-0-server")
    assert server.typ == DYN
    assert server.inputs["script"] == "patroni.sh"
    env = server.inputs["environment"]
    assert env["ALLOWED_HOSTS"] == "127.77.12.1 127.77.20.1"
    assert env["ETCD_HOSTS"] == "127.77.12.1:2379 127.77.20.1:2379"
    assert (env["MEMBER_NAME"], env["SCOPE"], env["REST_PORT"]) == ("fra-0", "dbfleet-eu", "8008")
    assert json.loads(env["DCS_CONFIG"])["ttl"] == 10
    assert not any(v in str(env) for v in PASSWORDS.values())
    assert resolve(node.port) == 5432


@pulumi.runtime.test
def test_secret_environment_is_a_secret_output(mocks):
    resolve(PatroniNode("fra-0", node_args()).port)
    # The secret environment carries every password and the node's certificate and
    # key, under the names the script reads.
    res = next(r for r in mocks.resources if r.name == "fra-0-server")
    sec = res.inputs["secret_environment"]
    # The engine receives it wrapped as a secret (signature + value).
    assert "4dabf18193072939515e22adb298388d" in sec
    sec = sec["value"]
    assert set(sec) == {
        "PG_SUPERUSER_PASSWORD",
        "PG_REPLICATION_PASSWORD",
        "PG_APP_PASSWORD",
        "TLS_CERT",
        "TLS_KEY",
    }
    # PEM as one printable line each (the script refuses secrets with newlines).
    assert base64.b64decode(sec["TLS_KEY"]) == b"KEY-PEM\n"
    assert "TLS_KEY" not in res.inputs["environment"]


def test_host_script_marks_secret_environment_secret():
    captured = {}

    @pulumi.runtime.test
    def body():
        r = HostScript("s", connection=LOCAL, script="account.sh", secret_environment={"X": "y"})
        captured["secret"] = is_secret(r.secret_environment)
        captured["plain"] = is_secret(r.environment)

    pulumi.runtime.set_mocks(
        __import__("tests.unit.conftest", fromlist=["RecordingMocks"]).RecordingMocks()
    )
    body()
    assert captured == {"secret": True, "plain": False}


@pytest.mark.parametrize(
    ("durability", "sync"), [pytest.param("async", False), pytest.param("sync", True)]
)
def test_durability_sets_patronis_synchronous_mode(durability, sync):
    dcs = dcs_config(durability, 4096, 150)
    assert dcs["synchronous_mode"] is sync
    assert dcs["maximum_lag_on_failover"] == 4096
    assert dcs["postgresql"]["parameters"]["max_connections"] == 150
    # Patroni's own rule: a leader must be able to retry etcd twice within its ttl.
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]


@pulumi.runtime.test
def test_group_leader_names_every_member_and_the_preferred_one(mocks):
    leader = GroupLeader(
        "leader",
        GroupLeaderArgs(
            connection=LOCAL,
            run_as="dbfleet-eu",
            scope="dbfleet-eu",
            members={"fra-0": ("127.77.12.1", 5432, 8008), "lhr-0": ("127.77.20.1", 5432, 8008)},
            preferred="lhr-0",
            dcs=dcs_config("sync", 1, 100),
            passwords=pulumi.Output.secret(PASSWORDS),
            ca="CA-PEM",
        ),
    )
    resolve(leader.summary)
    res = mocks.named("leader-leader")
    env = res.inputs["environment"]
    assert res.inputs["script"] == "patroni_leader.sh" and res.inputs["check_drift"] is True
    assert env["MEMBERS"] == "fra-0=127.77.12.1:5432:8008 lhr-0=127.77.20.1:5432:8008"
    assert env["PREFERRED"] == "lhr-0"
    # The group's CA, with which the script verifies every member's REST API (HTTPS).
    assert base64.b64decode(env["TLS_CA"]) == b"CA-PEM\n"


def test_a_group_leader_without_the_groups_ca_is_refused():
    with pytest.raises(ValueError, match="no CA"):
        GroupLeaderArgs(
            connection=LOCAL,
            run_as="u",
            scope="f-eu",
            members={"fra-0": ("127.77.12.1", 5432, 8008)},
            preferred="fra-0",
            dcs={},
            passwords=pulumi.Output.secret(PASSWORDS),
        )


def test_a_preferred_leader_outside_the_members_is_refused():
    with pytest.raises(ValueError, match="not a member"):
        GroupLeaderArgs(
            connection=LOCAL,
            run_as="u",
            scope="f-eu",
            members={"fra-0": ("127.77.12.1", 5432, 8008)},
            preferred="lhr-0",
            dcs={},
            passwords=pulumi.Output.secret(PASSWORDS),
        )


def test_a_node_without_etcd_is_refused():
    with pytest.raises(ValueError, match="etcd"):
        node_args(etcd_hosts=())


@pytest.mark.parametrize("field", ["port", "rest_port"])
@pytest.mark.parametrize("port", [80, 70000])
def test_node_port_out_of_range_is_refused(field, port):
    with pytest.raises(ValueError, match="outside"):
        node_args(**{field: port})


def test_relative_node_dir_is_refused():
    with pytest.raises(ValueError, match="absolute"):
        node_args(node_dir="data/fra-0")


FRA0 = ProxyServer("127.77.12.1", 5432, 8008)
FRA1 = ProxyServer("127.77.12.1", 5433, 8009)
LHR0 = ProxyServer("127.77.20.1", 5432, 8008)
ARN0 = ProxyServer("127.77.2.1", 5432, 8008)


GROUP_CA = "-----BEGIN CERTIFICATE-----\nMIIBgroupCA\n-----END CERTIFICATE-----\n"


def proxy_args(**over) -> RegionProxyArgs:
    base = {
        "connection": LOCAL,
        "run_as": "u",
        "proxy_dir": "/srv/x/proxy-lhr",
        "host": "127.77.20.1",
        "read_port": 6432,
        "write_port": 6433,
        "stats_port": 6434,
        "write_servers": (FRA0, FRA1, LHR0, ARN0),
        "read_local": (LHR0,),
        "read_backups": (FRA0, FRA1, ARN0),
        "read_lag_bytes": 16 * 1024 * 1024,
        "server_maxconn": 15,
        "queue_timeout_s": 10,
        "ca": GROUP_CA,
    }
    base.update(over)
    return RegionProxyArgs(**base)


@pulumi.runtime.test
def test_proxy_reads_local_first_then_backups_in_order(mocks):
    proxy = RegionProxy("lhr", proxy_args())
    resolve(proxy.read_endpoint)
    env = mocks.named("lhr-haproxy").inputs["environment"]
    # host:pgport:restport - clients go to the first port, checks to Patroni's.
    assert env["READ_LOCAL"] == "127.77.20.1:5432:8008"
    assert env["READ_BACKUPS"] == "127.77.12.1:5432:8008 127.77.12.1:5433:8009 127.77.2.1:5432:8008"
    assert env["WRITE_SERVERS"] == (
        "127.77.12.1:5432:8008 127.77.12.1:5433:8009 127.77.20.1:5432:8008 127.77.2.1:5432:8008"
    )
    assert "WRITE_BACKEND" not in env
    assert (env["READ_LAG_BYTES"], env["SERVER_MAXCONN"], env["QUEUE_TIMEOUT_S"]) == (
        "16777216",
        "15",
        "10",
    )
    assert resolve(proxy.read_endpoint) == "127.77.20.1:6432"
    assert resolve(proxy.write_endpoint) == "127.77.20.1:6433"


def test_proxy_refuses_same_node_local_and_backup():
    # The same node (host:port), even if a REST port differed, is not both.
    with pytest.raises(ValueError, match="both local and backup"):
        proxy_args(read_local=(LHR0,), read_backups=(ProxyServer(LHR0.host, LHR0.port, 9),))


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"write_servers": ()}, "write listener needs"),
        ({"server_maxconn": 0}, "server_maxconn must be at least 1"),
        ({"read_lag_bytes": 0}, "read_lag_bytes must be at least 1"),
        ({"queue_timeout_s": 0}, "queue_timeout_s must be at least 1"),
        ({"ca": ""}, "no CA"),
    ],
)
def test_proxy_refuses_inputs_that_would_admit_nobody(over, message):
    with pytest.raises(ValueError, match=message):
        proxy_args(**over)


def render_haproxy(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`haproxy.sh render`: the configuration the environment gives, nothing changed."""
    return subprocess.run(
        ["bash", str(SCRIPTS_DIR / "haproxy.sh"), "render"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def listen_block(cfg: str, name: str) -> list[str]:
    """The stripped lines of `listen <name>` up to the next blank line."""
    lines = cfg.splitlines()
    start = lines.index(f"listen {name}")
    block = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        block.append(line.strip())
    return block


def test_haproxy_config_checks_every_node_through_patroni():
    proc = render_haproxy(proxy_args().environment())
    assert proc.returncode == 0, proc.stderr
    cfg = proc.stdout
    write = listen_block(cfg, "write")
    # Every node in the write listener, checked on its REST port with /primary;
    # one failed check or refused connection takes it out and cuts its sessions.
    assert "http-check send meth GET uri /primary" in write
    assert "http-check expect status 200" in write
    assert "option pgsql-check" not in cfg
    (defaults,) = [line for line in write if line.startswith("default-server")]
    for word in ("inter 1s", "fall 1", "rise 1", "on-marked-down shutdown-sessions"):
        assert word in defaults
    assert "observe layer4" in defaults and "on-error mark-down" in defaults
    assert "maxconn 15" in defaults
    # Patroni's REST API speaks HTTPS only: each check verifies the node's certificate
    # against the group's CA, which haproxy.sh keeps in the proxy's directory.
    tls = "check-ssl verify required ca-file /srv/x/proxy-lhr/tls/ca.crt"
    assert defaults.endswith(tls)
    assert [line for line in write if line.startswith("server")] == [
        "server node1_127.77.12.1:5432 127.77.12.1:5432 check port 8008",
        "server node2_127.77.12.1:5433 127.77.12.1:5433 check port 8009",
        "server node3_127.77.20.1:5432 127.77.20.1:5432 check port 8008",
        "server node4_127.77.2.1:5432 127.77.2.1:5432 check port 8008",
    ]
    read = listen_block(cfg, "read")
    assert "http-check send meth GET uri /read-only?lag=16777216" in read
    assert {"balance leastconn", "retries 2", "option redispatch 1"} <= set(read)
    assert "option allbackups" not in read
    (defaults,) = [line for line in read if line.startswith("default-server")]
    assert "observe layer4" in defaults and "maxconn 15" in defaults
    assert defaults.endswith(tls)
    # Local first, then backups nearest first.
    assert [line for line in read if line.startswith("server")] == [
        "server local1_127.77.20.1:5432 127.77.20.1:5432 check port 8008",
        "server backup1_127.77.12.1:5432 127.77.12.1:5432 check port 8008 backup",
        "server backup2_127.77.12.1:5433 127.77.12.1:5433 check port 8009 backup",
        "server backup3_127.77.2.1:5432 127.77.2.1:5432 check port 8008 backup",
    ]
    lines = [line.strip() for line in cfg.splitlines()]
    assert "timeout queue 10s" in lines
    # Servers start from the state haproxy.sh writes (write servers DOWN until checked).
    assert "server-state-file /srv/x/proxy-lhr/haproxy.state" in lines
    assert "load-server-state-from-file global" in lines


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("WRITE_SERVERS", "127.77.12.1:5432", "not host:pgport:restport"),
        ("READ_LOCAL", "127.77.20.1:5432:0", "not a TCP port"),
        ("READ_BACKUPS", "fra:5432:8008", "not an IPv4 address"),
        ("SERVER_MAXCONN", "0", "SERVER_MAXCONN"),
        ("READ_LAG_BYTES", "16MB", "READ_LAG_BYTES"),
        ("QUEUE_TIMEOUT_S", "", "QUEUE_TIMEOUT_S"),
        ("TLS_CA", "", "TLS_CA"),
        ("TLS_CA", base64.b64encode(b"not a certificate").decode(), "not a PEM certificate"),
    ],
)
def test_haproxy_script_refuses_bad_servers_and_limits(var, value, message):
    proc = render_haproxy({**proxy_args().environment(), var: value})
    assert proc.returncode != 0
    assert message in proc.stderr
    assert proc.stdout == ""


def account_args(**over) -> GroupAccountArgs:
    base = {"connection": LOCAL, "fleet": "dbfleet", "user": "dbfleet-eu", "data_root": "/srv/d/eu"}
    base.update(over)
    return GroupAccountArgs(**base)


@pulumi.runtime.test
def test_account_creates_user_and_root_marked_with_the_fleet(mocks):
    acct = GroupAccount("account", account_args(fleet="ncfleet"))
    resolve(acct.user)
    env = mocks.named("account-account").inputs["environment"]
    assert env == {"ACCOUNT_USER": "dbfleet-eu", "DATA_ROOT": "/srv/d/eu", "FLEET_NAME": "ncfleet"}
    assert resolve(acct.user) == "dbfleet-eu"


@pulumi.runtime.test
def test_account_deployed_before_fleet_names_is_updated_not_replaced(mocks):
    # State written before FLEET_NAME existed: giving it re-runs create (which
    # re-marks the user and root for the fleet); deleting the data root is wrong.
    resolve(GroupAccount("account", account_args()).user)
    news = dict(mocks.named("account-account").inputs)
    olds = {**news, "environment": {"ACCOUNT_USER": "dbfleet-eu", "DATA_ROOT": "/srv/d/eu"}}
    olds["check_drift"] = news["check_drift"] = False
    result = HostScriptProvider().diff("id", olds, news)
    assert (result.changes, result.replaces) == (True, [])


@pytest.mark.parametrize("fleet", ["", "Fleet", "a_b", "-a", "x" * 64])
def test_account_refuses_a_fleet_name_that_is_not_a_label(fleet):
    with pytest.raises(ValueError, match="fleet name"):
        account_args(fleet=fleet)


def test_account_refuses_long_user_name():
    with pytest.raises(ValueError, match="32"):
        account_args(user="x" * 33, data_root="/d")


def test_nodes_and_proxies_name_their_fleet_only_when_given():
    # Without a fleet their environment is what deployed stacks hold (no update).
    assert "FLEET_NAME" not in node_args().environment()
    assert node_args(fleet="ncfleet").environment()["FLEET_NAME"] == "ncfleet"
    assert "FLEET_NAME" not in proxy_args().environment()
    assert proxy_args(fleet="f").environment()["FLEET_NAME"] == "f"


@pulumi.runtime.test
def test_host_script_registers_the_inputs_deployed_stacks_hold(mocks):
    # Adding or dropping an input changes every deployed HostScript's diff.
    resolve(HostScript("s", connection=LOCAL, script="account.sh").summary)
    inputs = set(mocks.named("s").inputs) - {"__provider"}  # the pickled provider itself
    assert inputs == {
        "name",
        "connection",
        "script",
        "script_sha",
        "environment",
        "secret_environment",
        "replace_on_env",
        "check_drift",
        "timeout_s",
    }


def may_claim(owner: str, name: str, fleet: str | None) -> bool:
    """lib.sh's may_claim, run by bash (it only compares strings)."""
    env = {"PATH": "/usr/bin:/bin", "OWNER": owner, "NAME": name}
    if fleet is not None:
        env["FLEET_NAME"] = fleet
    proc = subprocess.run(
        ["bash", "-c", f'. {SCRIPTS_DIR}/lib.sh && may_claim "$OWNER" "$NAME"'],
        env=env,
        capture_output=True,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


@pytest.mark.parametrize(
    ("owner", "name", "fleet", "allowed"),
    [
        pytest.param("fa", "fa-eu", "fa", True, id="own marker"),
        pytest.param("fa", "fa-eu", "fb", False, id="another fleet's marker"),
        pytest.param("fa", "fb-eu", "fb", False, id="another fleet's, even named like ours"),
        pytest.param("fa", "fa-eu", None, False, id="marked, claimed by a resource naming none"),
        pytest.param("", "fa-eu", "fa", True, id="old marker, named like ours"),
        pytest.param("", "fa-eu", "fb", False, id="old marker, another fleet's name"),
        pytest.param("", "fab-eu", "fa", False, id="old marker, name only shares a prefix"),
        pytest.param("", "anything", None, True, id="old marker, old resource: as before"),
    ],
)
def test_what_a_fleet_may_take_over_or_remove(owner, name, fleet, allowed):
    assert may_claim(owner, name, fleet) is allowed


def test_script_text_inlines_library_and_drops_source_line():
    text = script_text("patroni.sh")
    assert "lib.sh - helpers shared" in text
    assert not any(
        line.strip().startswith((". ", "source ")) and "lib.sh" in line
        for line in text.splitlines()
    )
    assert len(script_digest("patroni.sh")) == 64


def test_unknown_script_is_refused():
    with pytest.raises(ValueError, match="unknown host script"):
        script_text("nope.sh")
