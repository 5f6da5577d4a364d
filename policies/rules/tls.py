"""TLS everywhere, from the group's own CA (docs/security.md).

`tls` judges every server before it is created: a PostgreSQL node (patroni.sh), a
pooler (pgbouncer.sh) and an etcd member (etcd.sh) carry the group's CA certificate
(TLS_CA; the scripts then accept TLS only: `hostssl` lines, PgBouncer's
`client_tls_sslmode = require`, replication and the pooler's server side with
`verify-full`, Patroni's REST API on HTTPS, etcd's clients on HTTPS with a client
certificate from that CA), and every certificate a stack declares comes from its own
group's PKI mount, never another group's.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pulumi_policy import (
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

from dbfleet import vault

from .common import (
    ETCD_SCRIPT,
    MANDATORY,
    NODE_SCRIPTS,
    POOLER_SCRIPT,
    HostScriptView,
    StackContext,
    certificate_mount,
    leaves,
    plain,
    reporter,
    stack_resource,
    stack_validator,
    try_context,
)

DESCRIPTION = (
    "TLS everywhere: every PostgreSQL node (and its Patroni REST API), pooler and etcd "
    "member has a certificate from its own group's CA and takes TLS connections only."
)
REMEDIATION = (
    "give PatroniNode, RegionPooler and EtcdMember their group's TlsFiles "
    "(components/tls.py: a ServerCertificate from vault.pki_mount(fleet, group) and the "
    "accounts stack's ca_certificate)."
)
#: what each TLS-only server script is, for the message
_SERVERS = {
    **dict.fromkeys(NODE_SCRIPTS, "PostgreSQL node"),
    POOLER_SCRIPT: "pooler",
    ETCD_SCRIPT: "etcd member",
}


def _pem_certificate(value: str) -> bool:
    try:
        return base64.b64decode(value, validate=True).startswith(b"-----BEGIN CERTIFICATE-----")
    except (binascii.Error, ValueError):
        return False


def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    ctx = try_context(args.urn)
    if ctx is None:
        return
    report = reporter(report_violation, REMEDIATION, args.urn)
    mount = certificate_mount(args.resource_type, args.props)
    if mount is not None:
        want = vault.pki_mount(ctx.fleet.name, ctx.group_name)
        if mount not in (want, "?"):
            report(
                f"{args.name}: a certificate from {mount}; the servers of group "
                f"{ctx.group_name} take certificates from their own CA ({want}) only"
            )
        return
    view = HostScriptView.of(args.resource_type, args.urn, args.name, args.props)
    if view is None or view.script not in _SERVERS:
        return
    ca = view.environment.get("TLS_CA", "")
    if not _pem_certificate(ca):
        what = _SERVERS[view.script]
        report(
            f"{view.name}: a {what} without its group's CA certificate (TLS_CA) would accept "
            "plain TCP and could not verify its peers"
        )


OUTPUTS_DESCRIPTION = (
    "TLS for clients: every connection URI a stack exports verifies the server "
    "(sslmode=verify-full) with a CA file (sslrootcert)."
)
OUTPUTS_REMEDIATION = (
    "build connection URIs with ?sslmode=verify-full&sslrootcert=<the group's CA file> "
    "(dbfleet/program/layers/proxies.py)."
)
#: the outputs whose every value is a client's connection URI
URI_OUTPUTS = ("connection_uris", "pooled_connection_uris")


def uri_problem(where: str, uri: str) -> str | None:
    """Why `uri` lets a client connect without verifying the server (None: it verifies)."""
    query = parse_qs(urlsplit(uri).query)
    mode = (query.get("sslmode") or ["prefer (libpq's default)"])[-1]
    if mode != "verify-full":
        return f"{where}: sslmode={mode}; clients must verify the server (verify-full)"
    if not query.get("sslrootcert"):
        return f"{where}: no sslrootcert; verify-full needs the group's CA file"
    return None


def output_problems(
    ctx: StackContext, resources: list[PolicyResource], _config: Mapping[str, Any]
) -> list[tuple[str | None, str]]:
    stack = stack_resource(resources)
    if stack is None:
        return []
    outputs = plain(stack.props)
    found = []
    for key in URI_OUTPUTS:
        if not isinstance(outputs, dict) or key not in outputs:
            continue
        for leaf in leaves(outputs[key], (key,)):
            if isinstance(leaf.value, str) and "://" in leaf.value:
                problem = uri_problem(leaf.dotted, leaf.value)
                if problem:
                    found.append((stack.urn, problem))
    return found


tls_outputs = StackValidationPolicy(
    name="tls-outputs",
    description=OUTPUTS_DESCRIPTION,
    validate=stack_validator(output_problems, OUTPUTS_REMEDIATION),
    enforcement_level=MANDATORY,
)

tls = ResourceValidationPolicy(
    name="tls",
    description=DESCRIPTION,
    validate=validate,
    enforcement_level=MANDATORY,
)

POLICIES = [tls, tls_outputs]
