"""No plaintext secrets: passwords, keys and tokens travel only as Pulumi secrets.

`no-plaintext-secrets` judges each resource's inputs before it is created: a property
named like a secret must hold a Pulumi secret, no plain string may carry a credential
(a URI with a password, `PGPASSWORD=...` on a command line), and a HostScript takes
secrets only through `secret_environment` (the provider scrubs those, and only those,
from error text). `no-plaintext-secret-outputs` judges the whole stack once the program
ran: the stack outputs, and every plain string of every resource, must not repeat the
value of any secret in the stack.

Messages name the property, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from .common import (
    HOST_SCRIPT,
    MANDATORY,
    STACK,
    UNKNOWN,
    Leaf,
    Secret,
    config_int,
    leaves,
    plain,
    reporter,
)

DESCRIPTION = (
    "No plaintext secrets: every input that carries a password, key or token is a Pulumi "
    "secret, and no credential appears in plaintext in a command line or environment value."
)
REMEDIATION = (
    "wrap the value with pulumi.Output.secret (passwords come from dbfleet.vault, already "
    "secret) and hand it to host scripts through HostScript's secret_environment, never "
    "environment or a command line."
)
OUTPUTS_DESCRIPTION = (
    "No plaintext secrets in stack outputs or state: an output carrying a credential is a "
    "secret, and no secret's value appears in plaintext anywhere in the stack."
)
OUTPUTS_REMEDIATION = (
    "export credentials (e.g. connection_uris) with pulumi.Output.secret, and never copy a "
    "secret's value into a plain property, summary or output."
)

# A property or variable named like one of these carries a secret...
_SECRET_NAME = re.compile(
    r"(?i)password|passwd|passphrase|secret|token|private_?key|api_?key|credential"
)
# ...unless it only names where a secret is kept (secret_path, secret_mount, passfile).
_REFERENCE_NAME = re.compile(r"(?i)(^|_)(path|mount|file|dir|name|names|id|ref|length|sha|digest)$")
# ...nor these, named like a secret but public by design: etcd's initial cluster token
# is the group's `<fleet>-<group>`, which only keeps two clusters from merging.
_PUBLIC_NAMES = frozenset({"ETCD_TOKEN"})
# postgresql://user:password@host, and NAME_WITH_PASSWORD=value (a command line or conninfo).
_URI_WITH_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:[^@\s/]+@")
_ASSIGNED_SECRET = re.compile(
    r"(?i)\b[\w.-]*(password|passwd|secret|token)[\w.-]*\s*=\s*['\"]?[^\s'\"&]+"
)

DEFAULT_MIN_SECRET_LENGTH = 8


def secret_named(name: str) -> bool:
    return (
        bool(_SECRET_NAME.search(name))
        and not _REFERENCE_NAME.search(name)
        and name not in _PUBLIC_NAMES
    )


def carries_credential(text: str) -> bool:
    return bool(_URI_WITH_PASSWORD.search(text) or _ASSIGNED_SECRET.search(text))


def _has_value(leaf: Leaf) -> bool:
    return leaf.value not in (None, "", UNKNOWN) and not isinstance(leaf.value, bool)


def leaf_problems(owner: str, props: Any, where: str = "") -> list[str]:
    """Plain values that carry a secret, by their name or by what they say."""
    problems: list[str] = []
    for leaf in leaves(props):
        if leaf.secret or not _has_value(leaf):
            continue
        label = f"{owner}: {where}{leaf.dotted}"
        if any(secret_named(part) for part in leaf.path):
            problems.append(f"{label} carries a secret in plaintext (it is not a Pulumi secret)")
        elif isinstance(leaf.value, str) and carries_credential(leaf.value):
            problems.append(
                f"{label} carries a credential in plaintext (a URI with a password, or a "
                "password assigned on a command line or in a connection string)"
            )
    return problems


def host_script_problems(name: str, props: dict[str, Any]) -> list[str]:
    """A HostScript's secrets belong in secret_environment even when they are Pulumi
    secrets: only secret_environment values are scrubbed from the provider's error text.
    (A plain one is already reported by `leaf_problems`.)"""
    env = props.get("environment")
    whole = isinstance(env, Secret)
    env = env.value if whole else env
    if not isinstance(env, dict):
        return []
    return [
        f"{name}: environment.{key} is a secret passed through the plain environment; "
        "it belongs in secret_environment"
        for key, value in env.items()
        if secret_named(str(key)) and (whole or isinstance(value, Secret))
    ]


def validate_resource(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    props = plain(args.props)
    if not isinstance(props, dict):
        return
    report = reporter(report_violation, REMEDIATION, args.urn)
    problems = leaf_problems(args.name, props)
    if args.resource_type == HOST_SCRIPT:
        problems += host_script_problems(args.name, props)
    for problem in problems:
        report(problem)


# --------------------------------------------------------------------------- stack


def _secret_values(all_props: Iterable[Any], min_length: int) -> set[str]:
    return {
        leaf.value
        for props in all_props
        for leaf in leaves(props)
        if leaf.secret and isinstance(leaf.value, str) and len(leaf.value) >= min_length
    }


def stack_problems(
    resources: list[tuple[str, str, str, Any]], min_length: int
) -> list[tuple[str, str]]:
    """(urn, problem) for each leak. `resources` is (urn, type, name, plain props)."""
    problems: list[tuple[str, str]] = []
    secrets = _secret_values((props for *_, props in resources), min_length)
    for urn, typ, name, props in resources:
        if typ == STACK:
            problems += [(urn, p) for p in leaf_problems("stack outputs", props)]
        for leaf in leaves(props):
            if leaf.secret or not isinstance(leaf.value, str):
                continue
            if any(s in leaf.value for s in secrets):
                owner = "stack outputs" if typ == STACK else name
                problems.append(
                    (urn, f"{owner}: {leaf.dotted} repeats the value of a secret in plaintext")
                )
    return problems


def validate_stack(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    min_length = config_int(args.get_config(), "minSecretLength", DEFAULT_MIN_SECRET_LENGTH)
    resources = [(r.urn, r.resource_type, r.name, plain(r.props)) for r in args.resources]
    report = reporter(report_violation, OUTPUTS_REMEDIATION)
    for urn, problem in stack_problems(resources, min_length):
        report(problem, urn)


no_plaintext_secrets = ResourceValidationPolicy(
    name="no-plaintext-secrets",
    description=DESCRIPTION,
    validate=validate_resource,
    enforcement_level=MANDATORY,
)

no_plaintext_secret_outputs = StackValidationPolicy(
    name="no-plaintext-secret-outputs",
    description=OUTPUTS_DESCRIPTION,
    validate=validate_stack,
    enforcement_level=MANDATORY,
    config_schema=PolicyConfigSchema(
        properties={
            "minSecretLength": {
                "type": "integer",
                "minimum": 4,
                "default": DEFAULT_MIN_SECRET_LENGTH,
                "description": "Secrets shorter than this are not searched for in plain values "
                "(a short value would match by chance).",
            }
        }
    ),
)

POLICIES = [no_plaintext_secrets, no_plaintext_secret_outputs]
