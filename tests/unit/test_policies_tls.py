"""tls: every PostgreSQL node and pooler has its group's CA; certificates come from the
group's own PKI mount."""

from __future__ import annotations

import pytest

from policies.rules.tls import tls, tls_outputs
from tests.unit.policy_support import (
    host_scripts,
    messages,
    replace_props,
    run_resource_policy,
    run_stack_policy,
    secret,
    with_env,
)

pytestmark = pytest.mark.usefixtures("unit_fleet")


def check(resource, stack: str = "replicas-eu") -> str:
    return messages(run_resource_policy(tls, stack, resource, None))


@pytest.mark.parametrize("stack", ["replicas-eu", "proxies-eu", "replicas-us", "proxies-us"])
def test_the_programs_servers_and_certificates_pass(stack):
    resources = host_scripts(stack)
    assert any(n.endswith("-tls") for n in resources)  # certificates are judged too
    for resource in resources.values():
        assert check(resource, stack) == "", resource.name


@pytest.mark.parametrize(
    ("stack", "name", "what"),
    [
        ("replicas-eu", "fra-0-server", "PostgreSQL node"),
        ("proxies-eu", "lhr-pool-pgbouncer", "pooler"),
        ("replicas-eu", "etcd-fra-etcd", "etcd member"),
    ],
)
def test_a_server_without_its_groups_ca_is_refused(stack, name, what):
    server = host_scripts(stack)[name]
    for broken in (with_env(server, TLS_CA=None), with_env(server, TLS_CA="bm90IGEgY2VydA==")):
        assert f"{name}: a {what} without its group's CA certificate (TLS_CA)" in check(
            broken, stack
        )


def test_a_certificate_from_another_groups_ca_is_refused():
    cert = host_scripts("replicas-eu")["fra-0-tls"]
    assert cert.props["mount"] == "pki-dbfleet-eu"
    text = check(replace_props(cert, mount="pki-dbfleet-us"))
    assert "fra-0-tls: a certificate from pki-dbfleet-us; the servers of group eu take" in text


def check_outputs(stack: str, outputs: dict) -> str:
    return messages(run_stack_policy(tls_outputs, stack, [], outputs))


def proxies_outputs(query: str) -> dict:
    uri = f"postgresql://app:{'A' * 43}@127.77.12.1:6433/app{query}"
    return {
        "connection_uris": secret({"fra": {"read": uri, "write": uri}}),
        "pooled_connection_uris": secret({"fra": {"write": uri}}),
    }


def test_verifying_connection_uris_pass():
    ok = "?sslmode=verify-full&sslrootcert=/srv/dbfleet/tls/dbfleet-eu-ca.pem"
    assert check_outputs("proxies-eu", proxies_outputs(ok)) == ""


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("", "sslmode=prefer (libpq's default); clients must verify the server"),
        ("?sslmode=require&sslrootcert=/ca.pem", "sslmode=require; clients must verify"),
        ("?sslmode=verify-full", "no sslrootcert; verify-full needs the group's CA file"),
    ],
)
def test_a_connection_uri_below_verify_full_is_refused(query, problem):
    text = check_outputs("proxies-eu", proxies_outputs(query))
    assert f"connection_uris.fra.write: {problem}" in text
    assert f"pooled_connection_uris.fra.write: {problem}" in text
    assert "A" * 43 not in text  # never the password
