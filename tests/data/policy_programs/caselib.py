"""Shared by the policy test programs (tests/integration/test_policies.py copies it next
to each program's __main__.py).

A program builds what dbfleet's layers would build for its stack's group — addresses
from the fleet file's network plan, data under the group's data root — and then breaks
exactly one thing that a policy must refuse. `DBFLEET_CASE_DATA` is where its data
would go if a policy let it through; the tests check that nothing ever appears there.
"""

from __future__ import annotations

import base64
import json
import os

import pulumi

from components.account import TYPE as ACCOUNT
from components.hostcmd import LOCAL, HostScript
from components.patroni import LEADER_TYPE as LEADER
from components.patroni import NODE_TYPE as NODE
from components.patroni import dcs_config
from components.proxy import TYPE as PROXY
from dbfleet.model.spec import default_spec_path, load_fleet
from dbfleet.model.stackname import parse_stack_name
from dbfleet.model.topology import plan_network

# Distinct, so that only a case that means to share a password shares one.
PASSWORDS = {
    "PG_SUPERUSER_PASSWORD": "policy-case-superuser-5f0c2d9e8b7a",
    "PG_REPLICATION_PASSWORD": "policy-case-replication-3a1b4c6d",
    "PG_APP_PASSWORD": "policy-case-application-9e8d7c6b",
}


# A group's CA certificate as the node and pooler scripts get it (TLS_CA: base64 PEM).
# Any PEM certificate serves here: these programs are only ever previewed.
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBpolicyCaseCA\n-----END CERTIFICATE-----\n"
TLS_CA = base64.b64encode(CA_PEM.encode()).decode()


class Group:
    """The stack's group as the fleet file under test describes it."""

    def __init__(self) -> None:
        self.stack = parse_stack_name(pulumi.get_stack())
        self.fleet = load_fleet(default_spec_path())
        self.name = self.stack.group
        self.data_root = f"{os.environ['DBFLEET_CASE_DATA']}/{self.fleet.name}-{self.name}"

    def host(self, region: str) -> str:
        """The address of any region of the fleet (of this group or another one)."""
        group = next(g for g, spec in self.fleet.groups.items() if region in spec.regions)
        return plan_network(self.fleet, group)[region].host

    @property
    def regions(self) -> list[str]:
        return list(self.fleet.groups[self.name].regions)

    @property
    def primary(self) -> str:
        return self.fleet.groups[self.name].primary

    def allowed_hosts(self) -> str:
        return " ".join([*sorted(self.host(r) for r in self.regions), "127.0.0.1"])

    @property
    def scope(self) -> str:
        return f"{self.fleet.name}-{self.name}"

    def dcs(self) -> str:
        spec = self.fleet.groups[self.name]
        return json.dumps(
            dcs_config(
                spec.durability,
                spec.max_lag_on_failover_bytes,
                self.fleet.limits.max_connections,
            ),
            sort_keys=True,
        )

    def etcd_hosts(self, first: str) -> str:
        order = [first, *(r for r in self.regions if r != first)]
        return " ".join(f"{self.host(r)}:{self.fleet.network.etcd_port}" for r in order)

    def node_env(self, region: str, **changes: str) -> dict[str, str]:
        env = {
            "RUN_AS": "nobody",
            "NODE_DIR": f"{self.data_root}/{region}-0",
            "PG_HOST": self.host(region),
            "PG_PORT": str(self.fleet.network.postgres_port),
            "REST_PORT": str(self.fleet.network.patroni_port),
            "MEMBER_NAME": f"{region}-0",
            "SCOPE": self.scope,
            "ETCD_HOSTS": self.etcd_hosts(region),
            "ALLOWED_HOSTS": self.allowed_hosts(),
            "DCS_CONFIG": self.dcs(),
            "TLS_CA": TLS_CA,
        }
        return {k: v for k, v in {**env, **changes}.items() if v is not None}

    def node(
        self, region: str, env: dict[str, str] | None = None, secrets: dict[str, str] | None = None
    ):
        component = pulumi.ComponentResource(NODE, f"{region}-0")
        return HostScript(
            f"{region}-0-server",
            connection=LOCAL,
            script="patroni.sh",
            environment=env or self.node_env(region),
            secret_environment=secrets or PASSWORDS,
            opts=pulumi.ResourceOptions(parent=component),
        )

    def leader_env(self, **changes: str) -> dict[str, str]:
        net = self.fleet.network
        first = [self.primary, *(r for r in self.regions if r != self.primary)]
        env = {
            "RUN_AS": "nobody",
            "SCOPE": self.scope,
            "MEMBERS": " ".join(
                f"{r}-0={self.host(r)}:{net.postgres_port}:{net.patroni_port}" for r in first
            ),
            "PREFERRED": f"{self.primary}-0",
            "DCS_CONFIG": self.dcs(),
            "APP_DB": "app",
            "APP_USER": "app",
        }
        return {**env, **changes}

    def leader(self, env: dict[str, str] | None = None):
        component = pulumi.ComponentResource(LEADER, "leader")
        return HostScript(
            "leader-leader",
            connection=LOCAL,
            script="patroni_leader.sh",
            environment=env or self.leader_env(),
            secret_environment=PASSWORDS,
            opts=pulumi.ResourceOptions(parent=component),
        )

    def proxy_env(self, region: str, **changes: str) -> dict[str, str]:
        net = self.fleet.network
        port = f"{net.postgres_port}:{net.patroni_port}"
        env = {
            "RUN_AS": "nobody",
            "PROXY_DIR": f"{self.data_root}/proxy-{region}",
            "PROXY_HOST": self.host(region),
            "READ_PORT": str(net.read_port),
            "WRITE_PORT": str(net.write_port),
            "STATS_PORT": str(net.stats_port),
            "WRITE_SERVERS": " ".join(f"{self.host(r)}:{port}" for r in self.regions),
            "READ_LOCAL": f"{self.host(region)}:{port}",
            "READ_BACKUPS": " ".join(f"{self.host(r)}:{port}" for r in self.regions if r != region),
        }
        return {**env, **changes}

    def proxy(self, region: str, env: dict[str, str] | None = None):
        component = pulumi.ComponentResource(PROXY, region)
        return HostScript(
            f"{region}-haproxy",
            connection=LOCAL,
            script="haproxy.sh",
            environment=env or self.proxy_env(region),
            opts=pulumi.ResourceOptions(parent=component),
        )

    def account(self, user: str, env: dict[str, str] | None = None):
        component = pulumi.ComponentResource(ACCOUNT, "account")
        return HostScript(
            "account-account",
            connection=LOCAL,
            script="account.sh",
            environment=env or {"ACCOUNT_USER": user, "DATA_ROOT": self.data_root},
            opts=pulumi.ResourceOptions(parent=component),
        )
