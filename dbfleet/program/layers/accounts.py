"""accounts-<group>: the group's OS user, its data root, and its secrets in Vault.

On the local target that is one account on this machine; on the ssh target one on
every host of the group, which also gets the Debian packages the later layers run
(PostgreSQL 15, HAProxy, nftables), installed where missing.
"""

from __future__ import annotations

import pulumi

from components.account import GroupAccount, GroupAccountArgs
from dbfleet import vault
from dbfleet.program.layers.context import LayerContext

# What a host of the ssh target needs from its package manager.
HOST_PACKAGES = (
    "postgresql-15",
    "postgresql-client-15",
    "patroni",
    "etcd-server",
    "etcd-client",
    # backups (docs/backups.md): installed already, used once the ssh target has them
    "pgbackrest",
    "curl",
    "haproxy",
    "pgbouncer",
    "nftables",
    # starts pgBackRest's TLS server after a reboot and runs scheduled backups (backups.md)
    "cron",
)


def build(ctx: LayerContext) -> None:
    path = vault.secret_path(ctx.fleet.name, ctx.group_name)
    client = vault.client_from_env()
    # A preview changes nothing, Vault included: it only reads. `up` creates the
    # passwords that are missing, with strong random values, and keeps the others.
    if pulumi.runtime.is_dry_run():
        try:
            vault.read_group_secrets(client, vault.DEFAULT_MOUNT, path)
        except vault.VaultError as exc:
            # Missing passwords are fine here: `up` creates them.
            if "does not exist" not in str(exc) and "missing" not in str(exc):
                raise
    else:
        vault.ensure_group_secrets(client, vault.DEFAULT_MOUNT, path)
    # The group's CA (Vault PKI, one engine per group): `dbfleet up` with an admin token
    # makes it; this stack only needs to find it.
    pki = vault.pki_mount(ctx.fleet.name, ctx.group_name)
    ca = vault.read_ca_pem(client, pki)
    if not ca and not pulumi.runtime.is_dry_run():
        try:
            vault.ensure_group_pki(
                client,
                pki,
                vault.ca_name(ctx.fleet.name, ctx.group_name),
                max_ttl=f"{ctx.fleet.tls.cert_ttl_s}s",
            )
        except vault.VaultError as exc:
            raise vault.VaultError(
                f"group {ctx.group_name} has no CA in Vault yet ({exc}); run `dbfleet up "
                f"{ctx.group_name}` once with an admin token"
            ) from None
        ca = vault.read_ca_pem(client, pki)

    if ctx.target == "ssh":
        accounts = [
            GroupAccount(
                f"account-{region}-{k}",
                GroupAccountArgs(
                    connection=ctx.node_connection(region, k),
                    fleet=ctx.fleet.name,
                    user=ctx.account_user(),
                    data_root=ctx.data_root(),
                    packages=HOST_PACKAGES,
                ),
            )
            for region, k in ctx.hosts()
        ]
    else:
        accounts = [
            GroupAccount(
                "account",
                GroupAccountArgs(
                    connection=ctx.connection,
                    fleet=ctx.fleet.name,
                    user=ctx.account_user(),
                    data_root=ctx.data_root(),
                ),
            )
        ]
    pulumi.export("group", ctx.group_name)
    pulumi.export("zone", ctx.group.zone)
    pulumi.export("user", accounts[0].user)
    pulumi.export("data_root", accounts[0].data_root)
    pulumi.export("secret_mount", vault.DEFAULT_MOUNT)
    pulumi.export("secret_path", path)
    pulumi.export("pki_mount", pki)
    # Public: what clients verify the group's servers with (sslmode=verify-full).
    pulumi.export("ca_certificate", ca)
