"""The Pulumi program: one stack `<layer>-<group>` of the fleet file."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pulumi

from dbfleet import vault
from dbfleet.model import identity
from dbfleet.model.spec import FleetError, default_spec_path, load_fleet
from dbfleet.model.stackname import StackName, StackNameError, parse_stack_name
from dbfleet.program.layers import accounts, networks, proxies, replicas
from dbfleet.program.layers.context import LayerContext
from dbfleet.program.upstream import (
    UpstreamError,
    forget_references,
    prefetch,
    read_outputs,
    stack_reference,
)

BUILDERS = {
    "accounts": accounts.build,
    "networks": networks.build,
    "replicas": replicas.build,
    "proxies": proxies.build,
}


def dbfleet_home() -> Path:
    home = os.environ.get("DBFLEET_HOME")
    if not home:
        raise pulumi.RunError("DBFLEET_HOME is not set: run `source scripts/env.sh` first")
    return Path(home).resolve()


def run(stack_name: str) -> None:
    """Builds the stack; when it cannot, fails without losing the stack's outputs.

    The SDK registers whatever was exported even when the program raises, so a
    failing stack would otherwise record no outputs at all — and every later
    layer that reads them would break. A failed run re-exports the outputs of the
    last successful one, secrets still secret, before it reports the failure.
    """
    forget_references()
    # What is alive now (the SDK, pydantic, the fleet models) lives until the program
    # exits: kept out of the cyclic GC, it is neither scanned again during the run nor
    # at exit (interpreter shutdown took ~0.1 s of every stack's preview).
    gc.freeze()
    try:
        _run(stack_name)
    except Exception:
        keep_previous_outputs(stack_name)
        raise
    gc.freeze()


def keep_previous_outputs(stack_name: str) -> None:
    from pulumi.runtime.sync_await import _sync_await

    try:
        ref = stack_reference(stack_name)
        outputs = _sync_await(ref.outputs.future()) or {}
        secret_names = set(_sync_await(ref.secret_output_names.future()) or [])
    except Exception:  # noqa: BLE001 — a first deploy has nothing to keep
        return
    for name, value in outputs.items():
        pulumi.export(name, pulumi.Output.secret(value) if name in secret_names else value)


def _ssh_login(fleet, stack) -> pulumi.Output | None:
    """The ssh target's login from Vault, as a secret; None on the local target."""
    if fleet.group_target(stack.group) != "ssh" or fleet.ssh is None:
        return None
    login = vault.read_ssh_login(vault.client_from_env(), vault.DEFAULT_MOUNT, fleet.ssh.key)
    # where the pins came from, for the provider's host-key messages
    return pulumi.Output.secret({**login, "vault_path": f"{vault.DEFAULT_MOUNT}/{fleet.ssh.key}"})


def _run(stack_name: str) -> None:
    try:
        stack = parse_stack_name(stack_name)
    except StackNameError as exc:
        raise pulumi.RunError(str(exc)) from None
    spec = default_spec_path()
    try:
        fleet = load_fleet(spec)
    except FleetError as exc:
        raise pulumi.RunError(
            f"fleet file {spec} is invalid:\n" + "\n".join(f"  {p}" for p in exc.problems)
        ) from None
    # Before anything is declared: a stack of another fleet is never touched, and the
    # other fleet's file is what its operator needs to hear about. A group the file
    # lacks has no upstream to read: only the stack's own record is asked then.
    known = stack.group in fleet.groups
    refused = identity.mismatch(fleet.name, spec, deployed_fleet(stack, upstream=known))
    if refused:
        raise pulumi.RunError(refused)
    if not known:
        raise pulumi.RunError(
            f"stack {stack_name}: group {stack.group!r} is not in {spec} (groups: {', '.join(fleet.groups)})"
        )
    try:
        ctx = LayerContext(
            stack=stack, fleet=fleet, home=dbfleet_home(), ssh_login=_ssh_login(fleet, stack)
        )
        BUILDERS[stack.layer](ctx)
    except vault.VaultError as exc:
        raise pulumi.RunError(str(exc)) from None
    except ValueError as exc:  # a component refused its arguments
        raise pulumi.RunError(f"stack {stack_name}: {exc}") from None
    pulumi.export(identity.OUTPUT, identity.of_fleet(fleet.name, spec).to_output())


def deployed_fleet(
    stack: StackName, *, upstream: bool = True
) -> dict[str, identity.FleetIdentity | None]:
    """The fleet `stack`'s group was deployed by: the stack's own record when the
    layer reads its own outputs anyway (accounts has nothing else to read; networks
    and replicas read themselves first, alone), else — or when the stack is new or
    was deployed by an older dbfleet — its group's accounts stack, which every other
    layer reads (unless not `upstream`). Read in the order the layers read, so no
    read is added to a wave."""
    sources = [str(stack)] if stack.layer != "proxies" or not upstream else []
    if stack.layer != "accounts" and upstream:
        sources.append(stack.upstream("accounts"))
    for source in sources:
        if source != str(stack):
            prefetch(*stack.upstream_stacks())
        try:
            found = identity.from_outputs(read_outputs(source, ()))
        except UpstreamError:
            found = None  # not deployed yet: the layer itself says so when it needs it
        if found is not None:
            return {source: found}
    return {}
