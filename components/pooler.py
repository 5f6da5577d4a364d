"""RegionPooler: the PgBouncer that pools one region's application connections.

It listens on the region's pool port and sits in front of the region's HAProxy
(RegionProxy), in transaction mode, with two databases: `<app_db>` goes to the
proxy's write listener (the primary) and `<app_db>_read` to its read listener (this
region's nodes first, then the nearest). HAProxy keeps doing the role- and
lag-aware routing; PgBouncer only multiplexes many client connections onto a few
server connections (docs/pooling.md argues the order).

The application user's password reaches the host through the secret environment
only, and PgBouncer keeps it in a 0600 userlist owned by the group's OS user.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.hostcmd import Connection, HostScript
from components.tls import TlsFiles

TYPE = "dbfleet:pooler:RegionPooler"
# The database name an application reads through: `<app_db>` + this.
READ_SUFFIX = "_read"


def _hostport(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


@dataclass(frozen=True)
class RegionPoolerArgs:
    connection: Connection
    run_as: str
    pool_dir: str
    host: str
    port: int
    # host:port of the region's HAProxy write and read listeners
    write_target: str
    read_target: str
    # host:port of the group's primary node: a change renews the server connections
    primary: str
    # the application user's password, a secret Output
    app_password: pulumi.Input[str]
    app_db: str = "app"
    app_user: str = "app"
    default_pool_size: int = 20
    max_client_conn: int = 1000
    # The pooler's certificate (its address), key and the group's CA.
    tls: TlsFiles | None = None
    # The fleet the pooler belongs to (its directory's marker names it); "" none.
    fleet: str = ""

    def __post_init__(self) -> None:
        if self.tls is None:
            raise ValueError(f"pooler {self.host}: no TLS certificate (clients must use TLS)")
        if not self.pool_dir.startswith("/"):
            raise ValueError(
                f"pooler {self.host}: pool_dir must be absolute, got {self.pool_dir!r}"
            )
        if not 1024 <= self.port <= 65535:
            raise ValueError(f"pooler {self.host}: port {self.port} is outside 1024..65535")
        for what in ("write_target", "read_target", "primary"):
            if not _hostport(getattr(self, what)):
                raise ValueError(
                    f"pooler {self.host}: {what} {getattr(self, what)!r} is not host:port"
                )
        if self.write_target == self.read_target:
            raise ValueError(f"pooler {self.host}: the write and read targets must differ")
        if f"{self.host}:{self.port}" in (self.write_target, self.read_target):
            raise ValueError(f"pooler {self.host}: port {self.port} is one of its own targets")
        if not 1 <= self.default_pool_size <= self.max_client_conn:
            raise ValueError(
                f"pooler {self.host}: default_pool_size {self.default_pool_size} must be "
                f"between 1 and max_client_conn ({self.max_client_conn})"
            )

    @property
    def read_db(self) -> str:
        return self.app_db + READ_SUFFIX

    def environment(self) -> dict[str, str]:
        env = {
            "RUN_AS": self.run_as,
            "POOL_DIR": self.pool_dir,
            "POOL_HOST": self.host,
            "POOL_PORT": str(self.port),
            "APP_DB": self.app_db,
            "APP_USER": self.app_user,
            "WRITE_TARGET": self.write_target,
            "READ_TARGET": self.read_target,
            "PRIMARY": self.primary,
            "DEFAULT_POOL_SIZE": str(self.default_pool_size),
            "MAX_CLIENT_CONN": str(self.max_client_conn),
            **(self.tls.environment() if self.tls else {}),
        }
        if self.fleet:
            env["FLEET_NAME"] = self.fleet
        if self.connection.kind == "ssh":
            env["TARGET"] = "ssh"  # listen on the host's own address, not loopback
        return env


class RegionPooler(pulumi.ComponentResource):
    endpoint: pulumi.Output[str]

    def __init__(
        self, name: str, args: RegionPoolerArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(TYPE, name, None, opts)
        pooler = HostScript(
            f"{name}-pgbouncer",
            connection=args.connection,
            script="pgbouncer.sh",
            environment=args.environment(),
            secret_environment=pulumi.Output.secret(
                pulumi.Output.all(
                    args.app_password,
                    args.tls.secret_environment() if args.tls else {},
                ).apply(lambda parts: {"PG_APP_PASSWORD": parts[0], **parts[1]})
            ),
            replace_on_env=["POOL_DIR", "RUN_AS"],
            check_drift=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.endpoint = pooler.summary.apply(lambda _: f"{args.host}:{args.port}")
        self.register_outputs({"endpoint": self.endpoint})
