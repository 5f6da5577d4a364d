"""TLS everywhere, from the group's own CA (docs/security.md).

`tls` judges every server before it is created: a PostgreSQL node (patroni.sh) and a
pooler (pgbouncer.sh) carry the group's CA certificate (TLS_CA; the scripts then accept
TLS only: `hostssl` lines, PgBouncer's `client_tls_sslmode = require`, replication and
the pooler's server side with `verify-full`), and every certificate a stack declares
comes from its own group's PKI mount, never another group's.
"""

from __future__ import annotations

import base64
import binascii

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from dbfleet import vault

from .common import (
    MANDATORY,
    NODE_SCRIPTS,
    POOLER_SCRIPT,
    HostScriptView,
    certificate_mount,
    reporter,
    try_context,
)

DESCRIPTION = (
    "TLS everywhere: every PostgreSQL node and pooler has a certificate from its own "
    "group's CA and takes TLS connections only."
)
REMEDIATION = (
    "give PatroniNode and RegionPooler their group's TlsFiles (components/tls.py: a "
    "ServerCertificate from vault.pki_mount(fleet, group) and the accounts stack's "
    "ca_certificate)."
)


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
    if view is None or view.script not in (*NODE_SCRIPTS, POOLER_SCRIPT):
        return
    ca = view.environment.get("TLS_CA", "")
    if not _pem_certificate(ca):
        what = "PostgreSQL node" if view.script in NODE_SCRIPTS else "pooler"
        report(
            f"{view.name}: a {what} without its group's CA certificate (TLS_CA) would accept "
            "plain TCP and could not verify its peers"
        )


tls = ResourceValidationPolicy(
    name="tls",
    description=DESCRIPTION,
    validate=validate,
    enforcement_level=MANDATORY,
)

POLICIES = [tls]
