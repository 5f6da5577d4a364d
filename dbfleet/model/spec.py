"""The fleet file: pydantic v2 models of its shape, its rules, and the YAML loader.

`load_fleet` is the one way a fleet file becomes a `FleetSpec`. It never lets a YAML or
pydantic exception escape: every problem it finds (all of them, not just the first)
comes back in one `FleetError` as `Problem(path, message)` pairs, where `path` is the
dotted field path a user can find in the file (`groups.eu.regions.fra.nodes`).

Validation happens in two passes. Pydantic checks shape: keys, types, ranges and
single-field rules. Cross-field rules (zones, primaries, one group per region) need whole
groups, so they run in `FleetSpec`'s model validator; when the shape check fails the
loader still runs them on every group whose own shape is sound, so a user sees all
problems in one go.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dbfleet import PROJECT_ROOT
from dbfleet.model.catalogue import REGIONS, ZONES

SPEC_ENV_VAR = "DBFLEET_SPEC"
FILE = "<file>"  # path of problems that concern the file as a whole

MAX_NAME_LEN = 20  # fleet and group names end up inside OS user names
MAX_NODES = 9  # node k listens on postgres_port + k, so the range is reserved up front
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")

Target = Literal["local", "ssh"]

Loc = tuple[object, ...]  # a pydantic-style location: ("groups", "eu", "regions", "fra")
RuleProblems = list[tuple[tuple[str, ...], str]]  # (location, message) from a rule

# Error type of the cross-field rules; its ctx carries (sub-path, message) pairs so that
# one validator can report several problems, each at its own field path.
_RULES_ERROR = "dbfleet_rules"
_DNS_LABEL = re.compile(r"[a-z](?:[a-z0-9-]*[a-z0-9])?")
_PLAIN_KEY = re.compile(r"[\w-]+")
_PLAIN_WORD = re.compile(r"[\w./:+-]+")
_MAX_SHOWN = 40


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a fleet file, at a dotted field path (or `<file>`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class FleetError(Exception):
    """A fleet file could not be loaded; `problems` lists every reason found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------- helpers


def _quote(text: str) -> str:
    """Quoted and escaped (control and bidi characters too): a problem stays one line."""
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN] + "..."
    return json.dumps(text)


def _key(value: object) -> str:
    """One part of a dotted path: bare when plain, quoted when it could confuse."""
    text = str(value)
    return text if len(text) <= _MAX_SHOWN and _PLAIN_KEY.fullmatch(text) else _quote(text)


def _name(value: object) -> str:
    """A name, code or address inside a message: bare when plain, quoted otherwise."""
    text = str(value)
    return text if len(text) <= _MAX_SHOWN and _PLAIN_WORD.fullmatch(text) else _quote(text)


def _short(value: object) -> str:
    try:
        text = str(value)
    except ValueError:  # an int too long to print (Python limits int -> str)
        return "a huge number"
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _describe(value: object) -> str:
    """What a user wrote, in YAML terms: `string "3"`, `boolean true`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {_short(value)}"
    if isinstance(value, float):
        return f"number {_short(value)}"
    if isinstance(value, str):
        return f"string {_quote(value)}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


def _dotted(loc: Iterable[object]) -> str:
    parts = [_key(p) for p in loc]
    return ".".join(parts) if parts else FILE


def _edits(a: str, b: str) -> int:
    """Edit distance where swapping two neighbouring letters counts as one edit (the
    optimal-string-alignment form of Damerau-Levenshtein): `cgd` is one edit from
    `cdg`, the typo people make, and two from `gdl`."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def _suggest(value: str, choices: Iterable[str], *, transform: Callable[[str], str] = str) -> str:
    """`; did you mean X?` for the closest choice: fewest edits first (a swap of two
    letters is one), then the most letters in common; nothing when none is close."""
    typed = transform(value)
    close = set(difflib.get_close_matches(typed, choices, n=5, cutoff=0.6))
    close |= {c for c in choices if _edits(typed, c) <= len(typed) // 3}
    if not close:
        return ""
    best = min(
        sorted(close),
        key=lambda c: (_edits(typed, c), -difflib.SequenceMatcher(None, typed, c).ratio()),
    )
    return f"; did you mean {best}?"


# --------------------------------------------------------------------------- field rules


def _check_label(what: str, value: str) -> str:
    if len(value) > MAX_NAME_LEN or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{what} {_name(value)} is not a DNS label: use lowercase letters, digits and "
            f"hyphens, start with a letter, end with a letter or digit, "
            f"at most {MAX_NAME_LEN} characters"
        )
    return value


def _check_group_name(value: str) -> str:
    return _check_label("group name", value)


def _check_fleet_name(value: str) -> str:
    return _check_label("fleet name", value)


def _check_zone(value: str) -> str:
    if value not in ZONES:
        hint = _suggest(value, ZONES, transform=str.upper)
        raise ValueError(f"unknown zone {_name(value)}{hint} (known: {', '.join(sorted(ZONES))})")
    return value


def _check_region_code(value: str) -> str:
    if value not in REGIONS:
        hint = _suggest(value, REGIONS, transform=str.lower)
        raise ValueError(f"unknown region {_name(value)}: not a Fly.io region code{hint}")
    return value


def _check_cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{_name(value)} is not a network in CIDR notation") from None
    if str(net.network_address) != value.split("/", 1)[0]:
        raise ValueError(f"{_name(value)} has host bits set; did you mean {net}?")
    if net.version != 4 or not net.subnet_of(LOOPBACK):
        raise ValueError(
            f"{_name(value)} is outside 127.0.0.0/8: regions of the local target "
            "are loopback addresses on this machine"
        )
    if net.prefixlen > 16:
        raise ValueError(
            f"prefix /{net.prefixlen} is too long: it must be /16 or shorter, because the "
            "third octet of each address is the region's catalogue index"
        )
    return value


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def _check_address(value: str) -> str:
    """An IP address or a DNS name (what ssh and PostgreSQL can both be given)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if _HOSTNAME.fullmatch(value) and not value.replace(".", "").isdigit():
        return value
    raise ValueError(f"{_name(value)} is not an IP address or a DNS name")


def _check_cidr_any(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(f"{_name(value)} is not a network in CIDR notation") from None
    return value


def _check_kv_path(value: str) -> str:
    parts = value.strip("/").split("/")
    if not value.strip("/") or any(not p or p in (".", "..") for p in parts):
        raise ValueError(f"{_name(value)} is not a Vault KV path (like ssh/fleet)")
    return value.strip("/")


GroupName = Annotated[StrictStr, AfterValidator(_check_group_name)]
RegionCode = Annotated[StrictStr, AfterValidator(_check_region_code)]
_SIZE_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3}
_SIZE_RE = re.compile(r"^([0-9]+)\s*(B|kB|MB|GB)$")


def size_bytes(text: str) -> int:
    """`16MB` -> 16777216 (PostgreSQL's units: kB, MB, GB are powers of 1024)."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise ValueError(text)
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def _check_size(text: str) -> str:
    try:
        size = size_bytes(text)
    except ValueError:
        raise PydanticCustomError(
            "size",
            "{value!r} is not a size: write a number and B, kB, MB or GB, e.g. 16MB",
            {"value": text},
        ) from None
    if size < 1:
        raise PydanticCustomError("size", "must be more than 0 bytes")
    return text


Port = Annotated[StrictInt, Field(ge=1024, le=65535)]


def _rules_error(problems: RuleProblems) -> PydanticCustomError:
    summary = "; ".join(f"{_dotted(loc)}: {msg}" for loc, msg in problems)
    return PydanticCustomError(
        _RULES_ERROR, "{summary}", {"summary": summary, "problems": problems}
    )


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostSpec(_Model):
    """A server of the ssh target: where one node (and, for the first, the region's
    proxy) runs."""

    address: Annotated[StrictStr, AfterValidator(_check_address)]
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 22


class RegionSpec(_Model):
    """One region of a group."""

    nodes: Annotated[StrictInt, Field(ge=1, le=MAX_NODES)] = 1
    # ssh target only: one host per node, node k on hosts[k]; the region's proxy
    # runs on hosts[0].
    hosts: list[HostSpec] | None = None


class SshSpec(_Model):
    """How dbfleet logs in to the hosts of the ssh target (pulumi-command's
    remote.Command connection model). The private key and the hosts' pinned host
    keys come from Vault: KV v2 at `key` under the fleet's mount, with the fields
    `private_key` and `known_hosts`; never from this file."""

    user: StrictStr = "root"
    key: Annotated[StrictStr, AfterValidator(_check_kv_path)]
    # A bastion: user@host[:port], as for `ssh -J`.
    proxy: StrictStr | None = None
    dial_error_limit: Annotated[StrictInt, Field(ge=1, le=100)] = 10
    per_dial_timeout_s: Annotated[StrictInt, Field(ge=1, le=300)] = 15


class BackupSpec(_Model):
    """A group's backups (pgBackRest, docs/backups.md). Every group on the local target
    has them, with these defaults when the fleet file says nothing: WAL is archived
    continuously, a backup is taken every `schedule_hours` (a full one when the newest
    full is `full_every_days` old, else a differential), and `full_keep` full backups
    are kept — with every backup and all WAL since the oldest of them, which is how far
    back a point-in-time restore can go."""

    schedule_hours: Annotated[StrictInt, Field(ge=1, le=168)] = 24
    full_every_days: Annotated[StrictInt, Field(ge=1, le=90)] = 7
    full_keep: Annotated[StrictInt, Field(ge=1, le=50)] = 2
    # ssh target only: the region whose first host keeps the repository; None: the
    # first region of the group (in the file's order) that is not its primary.
    repo_region: RegionCode | None = None


class GroupSpec(_Model):
    """A region group: data stays in `zone`; writes go to `primary` (the preferred
    primary: Patroni may fail over elsewhere, and `up` switches back)."""

    zone: Annotated[StrictStr, AfterValidator(_check_zone)]
    primary: StrictStr
    regions: Annotated[dict[RegionCode, RegionSpec], Field(min_length=1)]
    # None means "the fleet's target".
    target: Target | None = None
    # async: a failover may lose at most `max_lag_on_failover` of acknowledged WAL;
    # sync: Patroni's synchronous mode, a commit waits for one replica (RPO 0).
    durability: Literal["async", "sync"] = "async"
    # A replica further behind the primary than this (bytes of WAL not yet replayed)
    # leaves its region's read pool until it catches up; status turns DEGRADED.
    read_lag_budget: Annotated[StrictStr, AfterValidator(_check_size)] = "16MB"
    # async only: the most WAL a replica may miss and still be promoted by a failover.
    max_lag_on_failover: Annotated[StrictStr, AfterValidator(_check_size)] = "1MB"
    # None: the defaults of BackupSpec on the local target, no backups on the ssh
    # target (there the repository's host is the operator's choice to make).
    backup: BackupSpec | None = None

    @property
    def backups(self) -> BackupSpec:
        """The group's backup settings, the defaults when the file names none."""
        return self.backup or BackupSpec()

    @property
    def backup_repo_region(self) -> str:
        """The region whose first host keeps the repository on the ssh target: the
        file's `repo_region`, else the first non-primary region (a repository beside
        the primary would share its fate), else the primary of a one-region group."""
        if self.backups.repo_region:
            return self.backups.repo_region
        return next((r for r in self.regions if r != self.primary), self.primary)

    @property
    def read_lag_budget_bytes(self) -> int:
        return size_bytes(self.read_lag_budget)

    @property
    def max_lag_on_failover_bytes(self) -> int:
        return size_bytes(self.max_lag_on_failover)


class NetworkSpec(_Model):
    """Addresses and ports shared by every region (each region has its own address)."""

    cidr: Annotated[StrictStr, AfterValidator(_check_cidr)] = "127.77.0.0/16"
    postgres_port: Port = 5432
    read_port: Port = 6432
    write_port: Port = 6433
    stats_port: Port = 6434
    # Each region's PgBouncer (docs/pooling.md), in front of the region's HAProxy.
    pool_port: Port = 6435
    # Node k's Patroni REST API listens on patroni_port + k (docs/high-availability.md).
    patroni_port: Port = 8008
    # The region's etcd member: client and peer ports.
    etcd_port: Port = 2379
    etcd_peer_port: Port = 2380
    # ssh target: every host's pgBackRest TLS server (docs/backups.md), the group's
    # hosts only.
    backup_port: Port = 8432

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)

    @property
    def node_port_range(self) -> range:
        """Ports reserved for PostgreSQL nodes: one per possible node of a region."""
        return range(self.postgres_port, self.postgres_port + MAX_NODES)

    @property
    def patroni_port_range(self) -> range:
        """Ports reserved for the nodes' Patroni REST APIs."""
        return range(self.patroni_port, self.patroni_port + MAX_NODES)

    @model_validator(mode="after")
    def _ports_do_not_overlap(self) -> NetworkSpec:
        problems: RuleProblems = []
        nodes = self.node_port_range
        taken: dict[int, str] = {}
        for name, reserved in (("postgres_port", nodes), ("patroni_port", self.patroni_port_range)):
            if reserved[-1] > 65535:
                problems.append(
                    (
                        (name,),
                        (
                            f"must be at most {65536 - MAX_NODES}: ports {name} to "
                            f"{name}+{MAX_NODES - 1} are reserved for nodes"
                        ),
                    )
                )
        if set(nodes) & set(self.patroni_port_range):
            problems.append(
                (
                    ("patroni_port",),
                    (
                        f"ports {self.patroni_port}-{self.patroni_port + MAX_NODES - 1} overlap "
                        f"the PostgreSQL node ports {nodes[0]}-{nodes[-1]}"
                    ),
                )
            )
        for field in (
            "read_port",
            "write_port",
            "stats_port",
            "pool_port",
            "etcd_port",
            "etcd_peer_port",
            "backup_port",
        ):
            port = getattr(self, field)
            for label, reserved in (
                ("PostgreSQL node", nodes),
                ("Patroni REST", self.patroni_port_range),
            ):
                if port in reserved:
                    base = "postgres_port" if reserved is nodes else "patroni_port"
                    problems.append(
                        (
                            (field,),
                            (
                                f"port {port} overlaps the {label} ports {reserved[0]}-"
                                f"{reserved[-1]} ({base} to {base}+{MAX_NODES - 1})"
                            ),
                        )
                    )
                    break
            else:
                if port in taken:
                    problems.append(((field,), f"port {port} is already the {taken[port]}"))
            taken.setdefault(port, field)
        if problems:
            raise _rules_error(problems)
        return self


class FirewallSpec(_Model):
    """Who besides the group's own hosts may reach its ports (ssh target; the
    networks layer enforces it with nftables on every host)."""

    # may reach the proxies' read and write ports (the applications)
    clients: list[Annotated[StrictStr, AfterValidator(_check_cidr_any)]] = Field(
        default_factory=list
    )
    # may reach every port, node and stats ports included (dbfleet status, failover)
    operators: list[Annotated[StrictStr, AfterValidator(_check_cidr_any)]] = Field(
        default_factory=list
    )


class PoolingSpec(_Model):
    """Each region's PgBouncer (transaction mode): how many server connections it keeps
    per database (the write and the read database each have a pool) and how many
    client connections it accepts. Server connections open on demand: a pool is a
    ceiling, and the primary sees at most one write pool per region plus its own
    region's read pool (docs/pooling.md does the arithmetic)."""

    default_pool_size: Annotated[StrictInt, Field(ge=1, le=1000)] = 20
    max_client_conn: Annotated[StrictInt, Field(ge=1, le=100000)] = 1000

    @model_validator(mode="after")
    def _pool_fits_clients(self) -> PoolingSpec:
        if self.default_pool_size > self.max_client_conn:
            raise _rules_error(
                [
                    (
                        ("default_pool_size",),
                        (
                            f"{self.default_pool_size} server connections per pool is more "
                            f"than max_client_conn ({self.max_client_conn}) clients could use"
                        ),
                    )
                ]
            )
        return self


class LimitsSpec(_Model):
    """Connection limits: every node's `max_connections`, and how long a client
    waits in a proxy's queue for a free server slot before it gets an error.

    Each region's proxy gives every node a share of the node's slots (its
    max_connections less `RESERVED_CONNECTIONS` for superusers, Patroni and dbfleet
    status), so the group's proxies together never open more than the node
    accepts; a client beyond that queues instead of failing."""

    max_connections: Annotated[StrictInt, Field(ge=20, le=10000)] = 100
    queue_timeout_s: Annotated[StrictInt, Field(ge=1, le=3600)] = 10


class TlsSpec(_Model):
    """Server certificates, issued by each group's own CA in Vault (docs/security.md).

    `cert_ttl_s`: a certificate's lifetime (default 90 days). `renew_fraction`: the last
    part of that lifetime in which `up` renews it (default a third; a preview shows the
    renewals it would make)."""

    cert_ttl_s: Annotated[StrictInt, Field(ge=60, le=10 * 365 * 86400)] = 90 * 86400
    renew_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 1 / 3


# Slots of every node kept out of the proxies' shares: PostgreSQL's
# superuser_reserved_connections (3), Patroni's own sessions and dbfleet status.
RESERVED_CONNECTIONS = 10


class FleetSpec(_Model):
    """The whole fleet file."""

    name: Annotated[StrictStr, AfterValidator(_check_fleet_name)] = "dbfleet"
    target: Target = "local"
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    ssh: SshSpec | None = None
    firewall: FirewallSpec = Field(default_factory=FirewallSpec)
    pooling: PoolingSpec = Field(default_factory=PoolingSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    tls: TlsSpec = Field(default_factory=TlsSpec)
    groups: Annotated[dict[GroupName, GroupSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _cross_field_rules(self) -> FleetSpec:
        problems = (
            _group_rules(self.groups)
            + _host_rules(self.groups, self.target, self.ssh is not None)
            + _backup_rules(self.groups, self.target)
        )
        if problems:
            raise _rules_error(problems)
        return self

    def group_target(self, name: str) -> Target:
        """Where group `name` runs: its own `target`, else the fleet's."""
        try:
            group = self.groups[name]
        except KeyError:
            known = ", ".join(self.groups)
            raise KeyError(f"no group {name!r} in the fleet (groups: {known})") from None
        return group.target or self.target


def _host_rules(groups: Mapping[str, GroupSpec], fleet_target: str, has_ssh: bool) -> RuleProblems:
    """The ssh target's rules: hosts where (and only where) they belong, one per
    node, each listed once in the whole fleet."""
    problems: RuleProblems = []
    seen: dict[tuple[str, int], str] = {}
    ssh_groups = []
    for name, group in groups.items():
        target = group.target or fleet_target
        if target == "ssh":
            ssh_groups.append(name)
        for code, region in group.regions.items():
            loc = ("groups", name, "regions", code, "hosts")
            if target != "ssh":
                if region.hosts is not None:
                    problems.append(
                        (
                            loc,
                            f"hosts belong to the ssh target; group {name} runs on target {target}",
                        )
                    )
                continue
            if not region.hosts:
                problems.append(
                    (loc, f"missing: the ssh target needs one host per node ({region.nodes})")
                )
                continue
            if len(region.hosts) != region.nodes:
                problems.append(
                    (
                        loc,
                        f"{len(region.hosts)} host(s) for {region.nodes} node(s): list one host per node",
                    )
                )
            for k, host in enumerate(region.hosts):
                key = (host.address.lower(), host.port)
                where = f"groups.{name}.regions.{code}.hosts.{k}"
                if key in seen:
                    problems.append(
                        (
                            (*loc, str(k), "address"),
                            f"{host.address}:{host.port} is listed twice (also {seen[key]})",
                        )
                    )
                else:
                    seen[key] = where
    if ssh_groups and not has_ssh:
        problems.append(
            (
                ("ssh",),
                f"missing: group(s) {', '.join(ssh_groups)} run on target ssh, which needs an ssh section (user, key)",
            )
        )
    return problems


def _backup_rules(groups: Mapping[str, GroupSpec], fleet_target: str) -> RuleProblems:
    """`repo_region` names a region of its group, and only on the ssh target (on the
    local target the repository is in the group's data root, docs/backups.md)."""
    problems: RuleProblems = []
    for name, group in groups.items():
        repo = group.backup.repo_region if group.backup is not None else None
        if repo is None:
            continue
        loc = ("groups", name, "backup", "repo_region")
        if (group.target or fleet_target) != "ssh":
            problems.append(
                (
                    loc,
                    (
                        "repo_region is for the ssh target; on the local target the repository "
                        "is in the group's data root"
                    ),
                )
            )
        elif repo not in group.regions:
            problems.append(
                (
                    loc,
                    (
                        f"{repo} is not a region of group {name} ({', '.join(group.regions)}): "
                        "the repository stays on a host of the group"
                    ),
                )
            )
    return problems


def _group_rules(groups: Mapping[str, GroupSpec]) -> RuleProblems:
    """Rules that need a whole group (or the whole fleet); locations are fleet-relative."""
    problems: RuleProblems = []
    owner: dict[str, str] = {}
    for name, group in groups.items():
        for code in group.regions:
            zone = REGIONS[code].zone
            if zone != group.zone:
                message = f"region {code} is in zone {zone}, group {name} is pinned to zone "
                problems.append((("groups", name, "regions", code), message + group.zone))
        if group.primary not in group.regions:
            problems.append(
                (
                    ("groups", name, "primary"),
                    (
                        f"primary {_name(group.primary)} is not one of the group's regions "
                        f"({', '.join(group.regions)})"
                    ),
                )
            )
        # A region's address comes from the catalogue alone, so two groups sharing a
        # region would share addresses; it also keeps each group's state independent.
        for code in group.regions:
            if code in owner:
                problems.append(
                    (
                        ("groups", name, "regions", code),
                        (
                            f"region {code} already belongs to group {owner[code]}; "
                            "a region may belong to only one group"
                        ),
                    )
                )
            else:
                owner[code] = name
    return problems


# --------------------------------------------------------------------------- pydantic errors


_MESSAGES = {
    "missing": lambda e: "missing required key",
    "string_type": lambda e: f"expected a string, got {_describe(e['input'])}",
    "int_type": lambda e: f"expected an integer, got {_describe(e['input'])}",
    "dict_type": lambda e: f"expected a mapping, got {_describe(e['input'])}",
    "model_type": lambda e: f"expected a mapping, got {_describe(e['input'])}",
    "model_attributes_type": lambda e: f"expected a mapping, got {_describe(e['input'])}",
    "literal_error": lambda e: f"must be {e['ctx']['expected']}, got {_describe(e['input'])}",
    "too_short": lambda e: "must not be empty",
    "greater_than_equal": lambda e: f"must be at least {e['ctx']['ge']}, got {_short(e['input'])}",
    "less_than_equal": lambda e: f"must be at most {e['ctx']['le']}, got {_short(e['input'])}",
    "value_error": lambda e: str(e["ctx"]["error"]),
}


def _unwrap(annotation: Any) -> Any:
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif isinstance(annotation, types.UnionType):
            # `BackupSpec | None`: the keys are the model's.
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation


def _allowed_keys(parent: tuple[object, ...]) -> list[str] | None:
    """Keys the model at `parent` accepts, found by walking the model tree."""
    node: Any = FleetSpec
    for part in parent:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return None
            node = field.annotation
        elif get_origin(node) is dict:
            node = get_args(node)[1]
        else:
            return None
    node = _unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return None


def _message(err: Mapping[str, Any], loc: tuple[object, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"unknown key (allowed: {', '.join(allowed)})" if allowed else "unknown key"
    render = _MESSAGES.get(kind)
    message = render(err) if render else str(err["msg"])
    if kind == "string_type" and isinstance(err["input"], bool):
        message += " (YAML reads yes/no/on/off as booleans: quote it)"
    return message


def _problems_from(exc: ValidationError) -> list[tuple[Loc, Problem]]:
    problems: list[tuple[Loc, Problem]] = []
    for err in exc.errors(include_url=False):
        # "[key]" marks an error in a dict key; the key itself already names the place.
        loc = tuple(p for p in err["loc"] if p != "[key]")
        if err["type"] == _RULES_ERROR:
            for sub, msg in err["ctx"]["problems"]:
                problems.append((loc + sub, Problem(_dotted(loc + sub), msg)))
        else:
            message = " ".join(_message(err, loc).split())
            problems.append((loc, Problem(_dotted(loc), message)))
    return problems


def _rules_on_sound_groups(data: Mapping[str, Any]) -> list[tuple[Loc, Problem]]:
    """Cross-field rules on the groups whose own shape is valid.

    Pydantic skips a model validator when any field fails, so without this a typo in one
    group would hide a zone mistake in another.
    """
    raw_groups = data.get("groups")
    if not isinstance(raw_groups, Mapping):
        return []
    sound: dict[str, GroupSpec] = {}
    for name, raw in raw_groups.items():
        if not isinstance(name, str):
            continue
        try:
            _check_group_name(name)
            sound[name] = GroupSpec.model_validate(raw)
        except ValueError:  # includes ValidationError
            continue
    target = data.get("target") if data.get("target") in get_args(Target) else "local"
    found = _group_rules(sound) + _host_rules(sound, target, isinstance(data.get("ssh"), Mapping))
    return [(loc, Problem(_dotted(loc), msg)) for loc, msg in found]


# --------------------------------------------------------------------------- YAML


_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _FleetYamlLoader(yaml.SafeLoader):
    """SafeLoader for fleet files: mapping keys are text, duplicates are reported.

    Every key in a fleet file is a name, so a plain key is read as the text it is:
    `no:` is the group `no`, not the boolean false that YAML 1.1 would make of it.
    PyYAML silently keeps the last of two equal keys; here each repeat becomes a
    `Problem` at its dotted path.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # Repeated keys, each with the line it is on.
        self.duplicates: list[tuple[int, Problem]] = []
        # Line of every key path, so problems can be reported in the file's order.
        self.lines: dict[tuple[str, ...], int] = {}

    def construct_document(self, node: yaml.Node) -> Any:
        self._check_keys(node, (), set())
        return super().construct_document(node)

    def _check_keys(self, node: yaml.Node, path: tuple[str, ...], seen: set[int]) -> None:
        if id(node) in seen:  # aliases: visit each node once, and never loop
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue  # `<<: *anchor` merges are checked where the anchor is defined
                if key_node.style is None:  # plain (unquoted) scalar: keep its text
                    key_node.tag = _STR_TAG
                key = key_node.value
                mark = key_node.start_mark
                if key in first:
                    before = first[key].start_mark
                    self.duplicates.append(
                        (
                            mark.line + 1,
                            Problem(
                                _dotted(path + (key,)),
                                f"duplicate key {_name(key)} at line {mark.line + 1}, column "
                                f"{mark.column + 1} (first defined at line {before.line + 1})",
                            ),
                        )
                    )
                else:
                    first[key] = key_node
                    self.lines[path + (key,)] = mark.line + 1
                self._check_keys(value_node, path + (key,), seen)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_keys(item, path + (str(i),), seen)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(str(s) for s in (exc.context, exc.problem) if s)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return Problem(FILE, f"malformed YAML{where}: {' '.join(what.split())}")
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return Problem(
            FILE,
            f"malformed YAML at line {line}, column {column}: "
            f"character #x{char:04x} is not allowed",
        )
    return Problem(FILE, f"malformed YAML: {' '.join(str(exc).split())}")


# --------------------------------------------------------------------------- loading


MAX_YAML_DEPTH = 32


def _check_depth(text: str) -> None:
    """Refuses absurdly nested YAML from the event stream, which is read without
    recursion, before the (recursive) composer spends seconds hitting Python's limit."""
    # libyaml's parser when PyYAML has it (several times faster); a document it
    # cannot parse is left to the full loader below, which words the error.
    depth = 0
    try:
        for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise RecursionError
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return


def parse_fleet(text: str) -> FleetSpec:
    """Parse and validate the text of a fleet file; raise `FleetError` with every problem."""
    loader: _FleetYamlLoader | None = None
    try:
        _check_depth(text)
        loader = _FleetYamlLoader(text)  # rejects unprintable characters right away
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise FleetError([_yaml_problem(exc, text)]) from None
    except RecursionError:
        raise FleetError([Problem(FILE, "malformed YAML: nested too deeply")]) from None
    except ValueError as exc:
        # A scalar YAML accepts but Python cannot build: an int over 4300 digits, a
        # timestamp like 2024-13-45.
        reason = " ".join(str(exc).split(";")[0].split())
        raise FleetError(
            [Problem(FILE, f"malformed YAML: a value cannot be read ({reason})")]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()

    if data is None:
        raise FleetError([Problem(FILE, "file is empty: expected a mapping with a groups key")])
    if not isinstance(data, dict):
        raise FleetError(
            [Problem(FILE, f"top level must be a mapping with a groups key, got {_describe(data)}")]
        )

    problems = list(loader.duplicates)
    try:
        spec = FleetSpec.model_validate(data)
    except ValidationError as exc:
        found = _problems_from(exc)
        # The fleet-level rules ran only if every field was sound; otherwise run them here.
        if not any(err["type"] == _RULES_ERROR and err["loc"] == () for err in exc.errors()):
            found += _rules_on_sound_groups(data)
        problems += [(_line_of(loc, loader.lines), problem) for loc, problem in found]
    if problems:
        # In the file's order (stable: problems on one line keep the order found), once each.
        ordered = sorted(problems, key=lambda item: item[0])
        raise FleetError(dict.fromkeys(problem for _, problem in ordered))
    return spec


def _line_of(loc: Loc, lines: Mapping[tuple[str, ...], int]) -> int:
    """Line of the deepest part of `loc` written in the file (a missing key: its parent)."""
    parts = tuple(str(p) for p in loc)
    for end in range(len(parts), 0, -1):
        if parts[:end] in lines:
            return lines[parts[:end]]
    return 0


def load_fleet(path: str | Path) -> FleetSpec:
    """Load and validate a fleet file; raise `FleetError` with every problem found.
    A problem of the file as a whole names the file (as given), not `<file>`."""
    shown = str(path)
    path = Path(path)
    try:
        # utf-8-sig: tolerate the byte-order mark some editors write.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FleetError([Problem(shown, "file not found")]) from None
    except IsADirectoryError:
        raise FleetError([Problem(shown, "is a directory, not a fleet file")]) from None
    except UnicodeDecodeError as exc:
        raise FleetError(
            [Problem(shown, f"not UTF-8 text (invalid byte at offset {exc.start})")]
        ) from None
    except OSError as exc:
        raise FleetError([Problem(shown, f"cannot read: {exc.strerror or exc}")]) from None
    try:
        return parse_fleet(text)
    except FleetError as exc:
        raise FleetError(
            [Problem(shown, p.message) if p.path == FILE else p for p in exc.problems]
        ) from None


def default_spec_path() -> Path:
    """`$DBFLEET_SPEC` when set, else `stacks/fleet.yaml` in the project root."""
    override = os.environ.get(SPEC_ENV_VAR)
    if override:
        return Path(override)
    return PROJECT_ROOT / "stacks" / "fleet.yaml"
