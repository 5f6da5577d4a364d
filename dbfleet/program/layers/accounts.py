"""accounts-<group>: the group's OS user, its data root, and its secrets in Vault."""

from __future__ import annotations

import pulumi

from components.account import GroupAccount, GroupAccountArgs
from dbfleet import vault
from dbfleet.program.layers.context import LayerContext


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

    account = GroupAccount(
        "account",
        GroupAccountArgs(
            connection=ctx.connection,
            fleet=ctx.fleet.name,
            user=ctx.account_user(),
            data_root=ctx.data_root(),
        ),
    )
    pulumi.export("group", ctx.group_name)
    pulumi.export("zone", ctx.group.zone)
    pulumi.export("user", account.user)
    pulumi.export("data_root", account.data_root)
    pulumi.export("secret_mount", vault.DEFAULT_MOUNT)
    pulumi.export("secret_path", path)
