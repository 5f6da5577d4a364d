"""EtcdMember under mocks: its arguments check themselves, its environment is what
etcd.sh reads, and etcd.sh itself refuses inconsistent input before touching the host
(run by bash with input that fails its checks: nothing is started or written)."""

from __future__ import annotations

import base64
import getpass
import os
import subprocess

import pulumi
import pytest

from components.etcd import TYPE, EtcdMember, EtcdMemberArgs, cluster_spec
from components.hostcmd import DRIFT_EXIT_CODE, LOCAL, SCRIPTS_DIR, Connection
from components.tls import TlsFiles
from tests.unit.conftest import resolve

PEERS = [
    ("fra", "127.77.12.1", 2379, 2380),
    ("ams", "127.77.10.1", 2379, 2380),
    ("waw", "127.77.14.1", 2379, 2380),
]
CLUSTER, CLIENTS = cluster_spec(PEERS)
GROUP_CA = "-----BEGIN CERTIFICATE-----\nMIIBgroupCA\n-----END CERTIFICATE-----"
TLS = TlsFiles("CERT-PEM", pulumi.Output.secret("KEY-PEM"), GROUP_CA)


def etcd_args(**over) -> EtcdMemberArgs:
    base = {
        "connection": LOCAL,
        "run_as": "dbfleet-eu",
        "etcd_dir": "/srv/d/eu/etcd-fra",
        "member_name": "fra",
        "host": "127.77.12.1",
        "client_port": 2379,
        "peer_port": 2380,
        "cluster": CLUSTER,
        "clients": CLIENTS,
        "token": "ncfleet-eu",
        "tls": TLS,
    }
    base.update(over)
    return EtcdMemberArgs(**base)


def test_the_type_token_names_module_and_class():
    assert TYPE == "dbfleet:etcd:EtcdMember"


def test_cluster_spec_keeps_the_order_given():
    assert CLUSTER == (
        ("fra", "127.77.12.1", 2380),
        ("ams", "127.77.10.1", 2380),
        ("waw", "127.77.14.1", 2380),
    )
    assert CLIENTS == ("127.77.12.1:2379", "127.77.10.1:2379", "127.77.14.1:2379")


def test_environment_is_what_etcd_sh_reads():
    env = etcd_args(fleet="ncfleet").environment()
    assert env == {
        "RUN_AS": "dbfleet-eu",
        "ETCD_DIR": "/srv/d/eu/etcd-fra",
        "MEMBER_NAME": "fra",
        "ETCD_HOST": "127.77.12.1",
        "ETCD_CLIENT_PORT": "2379",
        "ETCD_PEER_PORT": "2380",
        "ETCD_CLUSTER": (
            "fra=https://127.77.12.1:2380,ams=https://127.77.10.1:2380,waw=https://127.77.14.1:2380"
        ),
        "ETCD_CLIENTS": "127.77.12.1:2379 127.77.10.1:2379 127.77.14.1:2379",
        "ETCD_TOKEN": "ncfleet-eu",
        # the group's CA: etcd admits only clients whose certificate it signed
        "TLS_CA": base64.b64encode(GROUP_CA.encode() + b"\n").decode(),
        "FLEET_NAME": "ncfleet",
    }
    assert "FLEET_NAME" not in etcd_args().environment()


def test_on_the_ssh_target_the_member_may_bind_the_hosts_own_address():
    ssh = Connection(kind="ssh", host="198.18.3.11", credentials={"private_key": "k"})
    assert etcd_args(connection=ssh).environment()["TARGET"] == "ssh"
    assert "TARGET" not in etcd_args().environment()


def test_a_group_of_one_region_is_a_cluster_of_one():
    cluster, clients = cluster_spec([PEERS[0]])
    assert etcd_args(cluster=cluster, clients=clients).environment()["ETCD_CLUSTER"] == (
        "fra=https://127.77.12.1:2380"
    )


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"member_name": "Fra"}, "region code"),
        ({"etcd_dir": "srv/etcd-fra"}, "absolute"),
        ({"host": "localhost"}, "not an IPv4 address"),
        ({"client_port": 80}, "client_port 80 is outside"),
        ({"peer_port": 70000}, "peer_port 70000 is outside"),
        ({"peer_port": 2379}, "both 2379"),
        ({"token": "eu group"}, "token"),
        ({"cluster": CLUSTER[1:]}, "does not list it"),
        ({"peer_port": 2381}, "does not list it"),
        ({"cluster": (*CLUSTER, ("fra", "127.77.15.1", 2380))}, "twice"),
        ({"cluster": (*CLUSTER[:2], ("waw", "127.77.10.1", 2380))}, "twice"),
        ({"cluster": (*CLUSTER, ("x_y", "127.77.15.1", 2380))}, "is invalid"),
        ({"clients": (*CLIENTS[:2], "127.77.14.1")}, "not host:port"),
        ({"clients": CLIENTS[:2]}, "2 client endpoints for 3 members"),
        ({"clients": (CLIENTS[0], CLIENTS[1], CLIENTS[1])}, "twice"),
        ({"clients": ("127.77.12.1:2389", *CLIENTS[1:])}, "its own 127.77.12.1:2379"),
        ({"tls": None}, "no TLS certificate"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_declared(over, message):
    with pytest.raises(ValueError, match=message):
        etcd_args(**over)


@pulumi.runtime.test
def test_the_member_runs_etcd_sh_and_exposes_its_client_url(mocks):
    member = EtcdMember("eu-fra", etcd_args(fleet="ncfleet"))
    assert resolve(member.client_url) == "https://127.77.12.1:2379"
    inputs = mocks.named("eu-fra-etcd").inputs
    assert inputs["script"] == "etcd.sh"
    assert inputs["environment"] == etcd_args(fleet="ncfleet").environment()
    # Its certificate and key travel in the secret environment only (the engine
    # receives it wrapped as a secret: signature + value).
    secret = mocks.named("eu-fra-etcd").inputs["secret_environment"]
    assert "4dabf18193072939515e22adb298388d" in secret
    assert {k: base64.b64decode(v) for k, v in secret["value"].items()} == {
        "TLS_CERT": b"CERT-PEM\n",
        "TLS_KEY": b"KEY-PEM\n",
    }
    assert "TLS_KEY" not in inputs["environment"]
    # Its directory, owner and identity in the cluster are a replacement (leave the
    # cluster, join it again); a longer cluster list or another client port an update.
    assert inputs["replace_on_env"] == [
        "ETCD_DIR",
        "RUN_AS",
        "MEMBER_NAME",
        "ETCD_HOST",
        "ETCD_PEER_PORT",
    ]
    assert inputs["check_drift"] is True
    assert [r.typ for r in mocks.resources if r.name == "eu-fra"] == [TYPE]


# etcd.sh's own checks, run by bash. RUN_AS is whoever runs the tests (it may act
# as itself), ETCD_DIR a path that is never created: each case dies before that.
def run_script(action: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = etcd_args(run_as=getpass.getuser(), etcd_dir="/nonexistent/dbfleet-etcd-unit")
    return subprocess.run(
        ["bash", str(SCRIPTS_DIR / "etcd.sh"), action],
        env={"PATH": os.environ["PATH"], **base.environment(), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ETCD_HOST": "0.0.0.0"}, "ETCD_HOST: '0.0.0.0' is not a loopback"),
        ({"MEMBER_NAME": "f r"}, "is not a member name"),
        ({"ETCD_TOKEN": "a b"}, "ETCD_TOKEN"),
        ({"ETCD_PEER_PORT": "2379"}, "are both 2379"),
        ({"ETCD_CLUSTER": "ams=https://127.77.10.1:2380"}, "does not list this member"),
        (
            {"ETCD_CLUSTER": "fra=https://127.77.12.1:2390,ams=https://127.77.10.1:2380"},
            "gives member fra the peer URL https://127.77.12.1:2390",
        ),
        (
            {"ETCD_CLUSTER": "fra=https://127.77.12.1:2380,ams=https://127.77.12.1:2380"},
            "listed twice",
        ),
        ({"ETCD_CLUSTER": "fra=127.77.12.1:2380"}, "is not name=https://host:port"),
        # Peers speak https only: a plain http peer URL is an error, not a fallback.
        ({"ETCD_CLUSTER": "fra=http://127.77.12.1:2380"}, "is not name=https://host:port"),
        ({"ETCD_CLUSTER": "fra=https://8.8.8.8:2380"}, "not a loopback"),
        ({"ETCD_CLIENTS": "127.77.12.1:2379"}, "1 endpoints, ETCD_CLUSTER 3 members"),
        (
            {"ETCD_CLIENTS": "127.77.12.1:2389 127.77.10.1:2379 127.77.14.1:2379"},
            "ETCD_CLIENTS does not list this member",
        ),
        ({"ETCD_DIR": "relative/etcd"}, "must be an absolute path"),
        ({"ETCD_TOKEN": ""}, "ETCD_TOKEN is not set"),
    ],
)
def test_etcd_sh_refuses_inconsistent_input_before_touching_the_host(env, message):
    for action in ("create", "delete"):
        proc = run_script(action, **env)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert message in proc.stderr
    assert not os.path.exists("/nonexistent/dbfleet-etcd-unit")


def test_etcd_sh_check_reports_a_member_that_was_never_made_as_drift():
    assert run_script("check").returncode == DRIFT_EXIT_CODE


def test_etcd_sh_names_its_actions():
    proc = run_script("restart")
    assert proc.returncode == 1
    assert "usage: etcd.sh create|update|delete|check" in proc.stderr
