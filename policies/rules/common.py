"""What every dbfleet policy needs: the stack's place in the fleet, HostScript inputs as
plain data, and secrets that stay recognisable as secrets.

Policies judge a resource against the fleet file (zones, group membership, the network
plan), so they use the same catalogue, parser and topology as the program
(`dbfleet.model.catalogue`, `dbfleet.model.spec`, `dbfleet.model.topology`) instead of a copy of them.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi_policy.policy
from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    ResourceValidation,
    ResourceValidationArgs,
    StackValidation,
    StackValidationArgs,
)
from pulumi_policy import deserialize as _policy_deserialize
from pulumi_policy import proxy as _policy_proxy

from dbfleet.model.catalogue import REGIONS
from dbfleet.model.spec import FleetError, FleetSpec, GroupSpec, default_spec_path, load_fleet
from dbfleet.model.stackname import StackNameError, parse_stack_name
from dbfleet.model.topology import RegionNet, plan_network

HOST_SCRIPT = "pulumi-python:dynamic:Resource"
STACK = "pulumi:pulumi:Stack"
STACK_REFERENCE = "pulumi:pulumi:StackReference"
PROVIDER_PREFIX = "pulumi:providers:"

ACCOUNT_SCRIPT = "account.sh"
NODE_SCRIPTS = ("patroni.sh",)
LEADER_SCRIPT = "patroni_leader.sh"
ETCD_SCRIPT = "etcd.sh"
PROXY_SCRIPT = "haproxy.sh"
POOLER_SCRIPT = "pgbouncer.sh"
FIREWALL_SCRIPT = "firewall.sh"

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

_INDEX_TO_REGION = {r.index: code for code, r in REGIONS.items()}


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True, repr=False)
class Secret:
    """A value the engine marked secret. pulumi-policy 1.7 unwraps secrets while it
    deserializes a resource, so without this a policy cannot tell a Pulumi secret from
    plaintext; the pack keeps the mark (see `keep_secret_marks`)."""

    value: Any

    def __repr__(self) -> str:  # never print what a secret holds
        return "Secret([hidden])"


def _deserialize(prop: Any) -> Any:
    if isinstance(prop, list):
        return [_deserialize(e) for e in prop]
    if isinstance(prop, dict):
        sig = prop.get(_policy_deserialize.SPECIAL_SIG_KEY)
        if sig == _policy_deserialize.SPECIAL_SECRET_SIG:
            if "value" not in prop:
                raise AssertionError("invalid secret in resource properties")
            return Secret(_deserialize(prop["value"]))
        if sig is not None:  # assets and archives: pulumi-policy's own decoding
            return _policy_deserialize._deserialize_property(prop)
        return {k: _deserialize(v) for k, v in prop.items()}
    return prop


def deserialize_keeping_secrets(props: Mapping[str, Any]) -> dict[str, Any]:
    """pulumi-policy's `deserialize_properties`, except that secrets become `Secret`."""
    return {k: _deserialize(v) for k, v in props.items()}


def keep_secret_marks() -> None:
    """Make the pack's analyzer keep secret marks on resource properties.

    The engine sends secrets marked (it marshals analyzer inputs with KeepSecrets), but
    pulumi-policy 1.7.0 strips the mark in `deserialize_properties`, which
    `pulumi_policy.policy` imports by name. Replacing that name is the one place the pack
    leans on pulumi-policy internals, so it fails loudly if a new version moves it.
    """
    if not hasattr(pulumi_policy.policy, "deserialize_properties"):
        raise RuntimeError(
            "pulumi_policy.policy.deserialize_properties is gone: this pulumi-policy version "
            "is not the pinned 1.7.0, and the no-plaintext-secrets policies cannot see secrets"
        )
    pulumi_policy.policy.deserialize_properties = deserialize_keeping_secrets


# --------------------------------------------------------------------------- plain values


class _Unknown:
    """A value the engine does not know yet (during preview)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = _Unknown()
# How `dbfleet preview` writes a value only known after apply into the planned outputs
# it previews a downstream stack against (dbfleet.ops.changes.UNKNOWN), e.g. the port of a
# node that does not exist yet: `127.77.1.1:(known after apply)`.
PLANNED_UNKNOWN = "(known after apply)"
_UNKNOWN_SENTINELS = frozenset(
    getattr(_policy_proxy, name) for name in dir(_policy_proxy) if name.startswith("UNKNOWN_")
)


def plain(value: Any) -> Any:
    """Properties as plain dicts and lists. Unknown values become `UNKNOWN` instead of
    raising while a policy walks them; secret marks stay."""
    if isinstance(value, Secret):
        return Secret(plain(value.value))
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        out = {}
        for key in value:
            try:
                out[key] = plain(value[key])
            except _policy_proxy.UnknownValueError:
                out[key] = UNKNOWN
        return out
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out_list = []
        for i in range(len(value)):
            try:
                out_list.append(plain(value[i]))
            except _policy_proxy.UnknownValueError:
                out_list.append(UNKNOWN)
        return out_list
    return value


def reveal(value: Any) -> Any:
    """`plain` value with every secret mark removed (for checks on what a value says)."""
    if isinstance(value, Secret):
        return reveal(value.value)
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


@dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]
    value: Any
    secret: bool

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def leaves(value: Any, path: tuple[str, ...] = (), secret: bool = False) -> Iterator[Leaf]:
    """Every scalar in a `plain` value with its path and whether a secret holds it."""
    if isinstance(value, Secret):
        yield from leaves(value.value, path, True)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*path, str(k)), secret)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, (*path, str(i)), secret)
    else:
        yield Leaf(path, value, secret)


# --------------------------------------------------------------------------- addresses


_IPV4_PREFIX = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3})(?::|$)")


def host_of(endpoint: str) -> str:
    """The address of `host:port`, `[v6]:port`, or a bare address; also of the
    forms the HA scripts list: `name=http://host:port` (etcd's initial cluster)
    and `name=host:port:port` (a Patroni member)."""
    endpoint = endpoint.strip()
    if "=" in endpoint:
        endpoint = endpoint.split("=", 1)[1]
    if "://" in endpoint:
        endpoint = endpoint.split("://", 1)[1].split("/", 1)[0]
    if match := _IPV4_PREFIX.match(endpoint):
        return match.group(1)
    if endpoint.startswith("["):
        return endpoint[1:].split("]", 1)[0]
    if endpoint.count(":") == 1:
        return endpoint.rsplit(":", 1)[0]
    head = endpoint.split(":", 1)[0]
    if "." in head:  # an IPv4 address never holds ":", a bare IPv6 one has no "." before one
        return head
    return endpoint


def port_of(endpoint: str) -> int | None:
    endpoint = endpoint.strip()
    tail = endpoint.rsplit("]:", 1)[1] if endpoint.startswith("[") and "]:" in endpoint else None
    if tail is None and endpoint.count(":") == 1:
        tail = endpoint.rsplit(":", 1)[1]
    return int(tail) if tail and tail.isdigit() else None


def ip_of(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address written in `address`; None when it is not one (a name, `*`)."""
    try:
        return ipaddress.ip_address(address.strip())
    except ValueError:
        return None


def is_wildcard(address: str) -> bool:
    """0.0.0.0, ::, * or empty: every interface of the host."""
    if address.strip() in ("", "*"):
        return True
    ip = ip_of(address)
    return ip is not None and ip.is_unspecified


def is_loopback(address: str) -> bool:
    ip = ip_of(address)
    return ip.is_loopback if ip is not None else address.strip() == "localhost"


# --------------------------------------------------------------------------- stack context


class ContextError(Exception):
    """The stack cannot be placed in the fleet (its name, or the fleet file)."""


def stack_of(urn: str) -> str:
    """`urn:pulumi:<stack>::<project>::<types>::<name>` -> `<stack>`."""
    head = urn.split("::", 1)[0]
    parts = head.split(":", 2)
    if len(parts) != 3 or parts[0] != "urn" or parts[1] != "pulumi":
        raise ContextError(f"{urn!r} is not a Pulumi URN")
    return parts[2]


def type_chain(urn: str) -> list[str]:
    """The resource's type and its parents' types, outermost parent first."""
    parts = urn.split("::")
    return parts[2].split("$") if len(parts) >= 4 else []


_fleet_lock = threading.Lock()
_fleet_cache: dict[tuple[str, int, int], FleetSpec] = {}


def load_current_fleet() -> tuple[Path, FleetSpec]:
    """The fleet file the program reads (`$DBFLEET_SPEC` or stacks/fleet.yaml), parsed;
    cached while the file is unchanged (the analyzer answers from several threads)."""
    path = default_spec_path()
    try:
        st = path.stat()
    except OSError as exc:
        raise ContextError(f"fleet file {path} cannot be read: {exc.strerror or exc}") from None
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _fleet_lock:
        if key not in _fleet_cache:
            try:
                _fleet_cache.clear()
                _fleet_cache[key] = load_fleet(path)
            except FleetError as exc:
                raise ContextError(
                    f"fleet file {path} is invalid: " + "; ".join(str(p) for p in exc.problems)
                ) from None
        return path, _fleet_cache[key]


@dataclass(frozen=True)
class StackContext:
    """A stack's place in the fleet: its layer, its group and what the file says of it."""

    stack: str
    layer: str
    group_name: str
    fleet: FleetSpec

    @property
    def group(self) -> GroupSpec:
        return self.fleet.groups[self.group_name]

    @property
    def zone(self) -> str:
        return self.group.zone

    @property
    def target(self) -> str:
        return self.fleet.group_target(self.group_name)

    @property
    def nets(self) -> dict[str, RegionNet]:
        return plan_network(self.fleet, self.group_name)

    @property
    def group_hosts(self) -> dict[str, str]:
        """address -> region, for every host of every region of the group (the
        region's one loopback address on the local target)."""
        return {
            host: region
            for region, net in self.nets.items()
            for host in (net.node_hosts or (net.host,))
        }

    @property
    def data_root_name(self) -> str:
        """The last part of the group's data root (`<data>/<fleet>-<group>`)."""
        return f"{self.fleet.name}-{self.group_name}"

    def region_of_address(self, address: str) -> str | None:
        """The region whose address this is: a host the fleet file lists for it (the
        ssh target), or its local address in this fleet's range (the local target)."""
        for group in self.fleet.groups:
            if self.fleet.group_target(group) == "ssh":
                for region, net in plan_network(self.fleet, group).items():
                    if address in net.node_hosts:
                        return region
        ip = ip_of(address)
        if ip is None or ip.version != 4 or ip not in self.fleet.network.network:
            return None
        octets = str(ip).split(".")
        if octets[3] != "1":
            return None
        return _INDEX_TO_REGION.get(int(octets[2]))

    def group_of_region(self, region: str) -> str | None:
        return next((g for g, spec in self.fleet.groups.items() if region in spec.regions), None)

    def describe_region(self, region: str) -> str:
        """`iad (zone US, group us)` — where a region belongs, for messages."""
        owner = self.group_of_region(region)
        where = f"group {owner}" if owner else "no group of the fleet"
        return f"{region} (zone {REGIONS[region].zone}, {where})"


def context_for(urn: str) -> StackContext:
    """The fleet context of the stack a URN belongs to; `ContextError` when there is none."""
    stack = stack_of(urn)
    try:
        name = parse_stack_name(stack)
    except StackNameError as exc:
        raise ContextError(str(exc)) from None
    path, fleet = load_current_fleet()
    if name.group not in fleet.groups:
        raise ContextError(
            f"stack {stack}: group {name.group!r} is not in {path} (groups: {', '.join(fleet.groups)})"
        )
    return StackContext(stack, name.layer, name.group, fleet)


def try_context(urn: str) -> StackContext | None:
    """The context, or None: the stack-shape policy is the one that reports why not."""
    try:
        return context_for(urn)
    except ContextError:
        return None


# --------------------------------------------------------------------------- HostScript


def region_in_name(name: str) -> str | None:
    """dbfleet names resources after their region: `fra-0`, `fra-0-server`, `fra-haproxy`;
    an etcd member after its cluster first: `etcd-fra`, `etcd-fra-etcd`."""
    parts = name.split("-", 2)
    first = parts[1] if parts[0] == "etcd" and len(parts) > 1 else parts[0]
    return first if first in REGIONS else None


@dataclass(frozen=True)
class HostScriptView:
    """A HostScript's inputs (or outputs) as plain data."""

    name: str
    urn: str
    script: str
    environment: dict[str, str]
    connection: dict[str, Any]
    props: dict[str, Any]  # every property, `plain` (secret marks kept)

    @classmethod
    def of(cls, resource_type: str, urn: str, name: str, props: Any) -> HostScriptView | None:
        """The view of a HostScript resource; None for any other resource."""
        if resource_type != HOST_SCRIPT:
            return None
        data = plain(props)
        script = reveal(data.get("script"))
        if not isinstance(script, str):
            return None
        env = reveal(data.get("environment"))
        env = env if isinstance(env, dict) else {}
        # What is not known yet cannot be judged: a wholly unknown value is left out, and
        # a planned unknown inside a value (a port) becomes `?`, so the rest still counts.
        env = {
            k: str(v).replace(PLANNED_UNKNOWN, "?")
            for k, v in env.items()
            if v is not UNKNOWN and str(v).strip() != PLANNED_UNKNOWN
        }
        conn = reveal(data.get("connection"))
        return cls(
            name=name,
            urn=urn,
            script=script,
            environment={str(k): v for k, v in env.items()},
            connection=dict(conn) if isinstance(conn, dict) else {},
            props=data,
        )

    @property
    def is_node(self) -> bool:
        return self.script in NODE_SCRIPTS

    @property
    def is_proxy(self) -> bool:
        return self.script == PROXY_SCRIPT

    @property
    def is_pooler(self) -> bool:
        return self.script == POOLER_SCRIPT

    @property
    def is_local(self) -> bool:
        return (self.connection.get("kind") or "local") == "local"

    @property
    def region_in_name(self) -> str | None:
        return region_in_name(self.name)

    def listed(self, key: str) -> list[str]:
        """The items an environment variable lists, separated by spaces or commas
        (none when unset)."""
        value = self.environment.get(key)
        return value.replace(",", " ").split() if isinstance(value, str) else []

    def addresses(self, key: str) -> list[str]:
        """The addresses an environment variable lists (`host`, `host:port`, space-separated)."""
        return [host_of(item) for item in self.listed(key)]


# --------------------------------------------------------------------------- reporting


def with_remediation(message: str, remediation: str) -> str:
    return f"{message}\nRemediation: {remediation}"


def reporter(report_violation: ReportViolation, remediation: str, urn: str | None = None):
    """`report(message)`: one violation with the policy's remediation appended."""

    def report(message: str, at: str | None = urn) -> None:
        report_violation(with_remediation(message, remediation), at)

    return report


# What a rule module writes: its problems, as plain messages. The validators below do
# the rest the same way for every policy that judges a stack placed in the fleet.
HostScriptProblems = Callable[[StackContext, HostScriptView, Mapping[str, Any]], Iterable[str]]
# (urn of the resource, problem); urn None for the stack as a whole.
StackProblems = Callable[
    [StackContext, list[PolicyResource], Mapping[str, Any]], Iterable[tuple[str | None, str]]
]


def stack_resource(resources: Iterable[PolicyResource]) -> PolicyResource | None:
    """The stack itself (`pulumi:pulumi:Stack`, which holds the outputs)."""
    return next((r for r in resources if r.resource_type == STACK), None)


def certificate_mount(resource_type: str, props: Any) -> str | None:
    """The PKI mount a ServerCertificate (components/tls.py) is issued from; None for any
    other resource."""
    if resource_type != HOST_SCRIPT:
        return None
    data = plain(props)
    if "common_name" not in data or "ip_sans" not in data or "script" in data:
        return None
    mount = reveal(data.get("mount"))
    return str(mount) if mount is not UNKNOWN else "?"


def host_script_validator(problems: HostScriptProblems, remediation: str) -> ResourceValidation:
    """The validator of a resource policy that judges HostScripts: every other resource,
    and every stack that cannot be placed in the fleet (stack-shape reports those), is
    passed over; each problem is reported on the HostScript with `remediation`."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        view = HostScriptView.of(args.resource_type, args.urn, args.name, args.props)
        if view is None:
            return
        ctx = try_context(args.urn)
        if ctx is None:
            return
        report = reporter(report_violation, remediation, args.urn)
        for problem in problems(ctx, view, args.get_config()):
            report(problem)

    return validate


def stack_validator(problems: StackProblems, remediation: str) -> StackValidation:
    """The validator of a stack policy that judges a stack placed in the fleet (one that
    cannot be placed is stack-shape's to report); each problem is reported where
    `problems` says, with `remediation`."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        stack = stack_resource(args.resources)
        if stack is None:
            return
        ctx = try_context(stack.urn)
        if ctx is None:
            return
        report = reporter(report_violation, remediation)
        for urn, problem in problems(ctx, args.resources, args.get_config()):
            report(problem, urn)

    return validate


def config_int(config: Mapping[str, Any], key: str, default: int) -> int:
    # Policy config arrives through a protobuf Struct, where every number is a float.
    value = config.get(key, default)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def config_bool(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    return value if isinstance(value, bool) else default
