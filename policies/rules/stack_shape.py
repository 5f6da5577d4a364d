"""Stack shape: a stack `<layer>-<group>` declares only its own layer's resources, and
only for regions of its own group.

What each layer may declare (docs/policies.md, "stack-shape"): accounts — the group's
account; networks — nothing but references to earlier layers (it only exports); replicas
— PostgreSQL nodes and the primary fence; proxies — region proxies and their poolers. A proxies stack that
declares a database, or an `eu` stack that declares a `us` region, would put that
resource in the wrong blast radius: a proxy change could replace a database, an `eu`
change could touch `us`. A new component needs a line in LAYER_COMPONENTS and
COMPONENT_SCRIPTS; until it has one, this policy refuses it.

This policy is also where a stack that cannot be placed in the fleet at all (a name not
`<layer>-<group>`, a group the fleet file lacks, an unreadable fleet file) is reported;
the other policies skip such stacks rather than repeat it.
"""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from components import account, backup, etcd, firewall, patroni, pooler, proxy

from .common import (
    ACCOUNT_SCRIPT,
    ETCD_SCRIPT,
    FIREWALL_SCRIPT,
    HOST_SCRIPT,
    LEADER_SCRIPT,
    MANDATORY,
    NODE_SCRIPTS,
    POOLER_SCRIPT,
    PROVIDER_PREFIX,
    PROXY_SCRIPT,
    STACK,
    STACK_REFERENCE,
    ContextError,
    HostScriptView,
    StackContext,
    certificate_mount,
    context_for,
    region_in_name,
    reporter,
    type_chain,
)

DESCRIPTION = (
    "Stack shape: a stack contains only the resources of its own layer and group (a proxies "
    "stack never declares a database, an eu stack never a us region)."
)
REMEDIATION = (
    "declare each resource in the stack of its layer and group (accounts: GroupAccount; "
    "networks: HostFirewall (ssh target); replicas: EtcdMember, PatroniNode, GroupLeader, GroupBackups; proxies: RegionProxy, RegionPooler), name stacks "
    "<layer>-<group> after a group of the fleet file, and keep every region in the group the "
    "fleet file gives it."
)

ACCOUNT = account.TYPE
NODE = patroni.NODE_TYPE
LEADER = patroni.LEADER_TYPE
ETCD = etcd.TYPE
PROXY = proxy.TYPE
FIREWALL = firewall.TYPE
POOLER = pooler.TYPE
BACKUPS = backup.TYPE

# What each layer owns: its component types, and the host scripts each component runs.
LAYER_COMPONENTS: dict[str, tuple[str, ...]] = {
    "accounts": (ACCOUNT,),
    # the ssh target's host firewalls; nothing on the local target
    "networks": (FIREWALL,),
    "replicas": (ETCD, NODE, LEADER, BACKUPS),
    "proxies": (PROXY, POOLER),
}
COMPONENT_SCRIPTS = {
    ACCOUNT: (ACCOUNT_SCRIPT,),
    NODE: NODE_SCRIPTS,
    LEADER: (LEADER_SCRIPT,),
    ETCD: (ETCD_SCRIPT,),
    PROXY: (PROXY_SCRIPT,),
    POOLER: (POOLER_SCRIPT,),
    FIREWALL: (FIREWALL_SCRIPT,),
    BACKUPS: (backup.SCRIPT,),
}
WHAT = {
    ACCOUNT: "a group account",
    NODE: "a database",
    LEADER: "a group's leadership",
    ETCD: "an etcd member",
    PROXY: "a proxy",
    POOLER: "a connection pooler",
    FIREWALL: "a host firewall",
    BACKUPS: "a group's backups",
}
# The layers whose servers have certificates (components/tls.py).
CERTIFICATE_LAYERS = ("replicas", "proxies")
# Engine-owned resources every stack may have.
_ALWAYS = (STACK, STACK_REFERENCE)


def _component_of_script(script: str) -> str | None:
    return next((c for c, scripts in COMPONENT_SCRIPTS.items() if script in scripts), None)


def _home_layer(component: str) -> str:
    return next(layer for layer, owned in LAYER_COMPONENTS.items() if component in owned)


def problems(ctx: StackContext, resource_type: str, urn: str, name: str, props) -> list[str]:
    if resource_type in _ALWAYS or resource_type.startswith(PROVIDER_PREFIX):
        return []
    own_components = LAYER_COMPONENTS[ctx.layer]
    found: list[str] = []
    view = HostScriptView.of(resource_type, urn, name, props)
    mount = certificate_mount(resource_type, props)
    if mount is not None:
        # A server certificate: beside the servers (replicas, proxies); which CA it
        # comes from is the tls policy's.
        found = []
        if ctx.layer not in CERTIFICATE_LAYERS:
            found.append(f"{name}: {ctx.stack} is a {ctx.layer} stack and declares a certificate")
        return found
    if resource_type == HOST_SCRIPT and view is None:
        return [
            f"{name}: a dynamic resource that is not a dbfleet HostScript has no place in {ctx.stack}"
        ]
    if view is not None:
        component = _component_of_script(view.script)
        if component is None:
            return [f"{name}: host script {view.script} is not one of dbfleet's scripts"]
        parents = [t for t in type_chain(urn)[:-1] if t in COMPONENT_SCRIPTS]
        if parents and parents[-1] != component:
            found.append(
                f"{name}: runs {view.script} under {parents[-1]}, which runs only "
                f"{', '.join(COMPONENT_SCRIPTS[parents[-1]])}"
            )
    elif resource_type in COMPONENT_SCRIPTS:
        component = resource_type
    else:
        return [
            f"{name}: {resource_type} is not a dbfleet resource; {ctx.stack} may not declare it"
        ]

    if component not in own_components:
        home = f"{_home_layer(component)}-{ctx.group_name}"
        found.append(
            f"{name}: {ctx.stack} is a {ctx.layer} stack and declares {WHAT[component]}"
            f"{' (' + view.script + ')' if view else ''}; that belongs in {home}"
        )
    named = region_in_name(name)
    regions = {named} if named else set()
    if view is not None:
        for key in ("PG_HOST", "PROXY_HOST", "POOL_HOST", "ETCD_HOST"):
            regions |= {r for a in view.addresses(key) if (r := ctx.region_of_address(a))}
    for region in sorted(regions - set(ctx.group.regions)):
        found.append(
            f"{name}: {ctx.stack} declares region {ctx.describe_region(region)}; group "
            f"{ctx.group_name} has only {', '.join(ctx.group.regions)}"
        )
    return found


def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    report = reporter(report_violation, REMEDIATION, args.urn)
    try:
        ctx = context_for(args.urn)
    except ContextError as exc:
        # Once per stack (on the stack itself), not once per resource.
        if args.resource_type == STACK:
            report(f"this stack cannot be placed in the fleet: {exc}")
        return
    for problem in problems(ctx, args.resource_type, args.urn, args.name, args.props):
        report(problem)


stack_shape = ResourceValidationPolicy(
    name="stack-shape",
    description=DESCRIPTION,
    validate=validate,
    enforcement_level=MANDATORY,
)

POLICIES = [stack_shape]
