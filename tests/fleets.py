"""The fleet file that tests and benchmarks bring up: the default fleet (README,
DESIGN) with a fleet name and loopback range of its own, so it never meets a fleet
brought up with `make up`. Kept here, not read from stacks/fleet.yaml, which users edit."""

# group -> (residency zone, primary region, regions), as in the default fleet
DEFAULT_GROUPS = {
    "us": ("US", "iad", ("iad", "ord", "sjc")),
    "eu": ("EU", "fra", ("fra", "lhr", "arn")),
}


def default_fleet_text(name: str, octet: int, groups: tuple[str, ...] = ("us", "eu")) -> str:
    """The default fleet (or some of its groups), one node per region."""
    lines = [f"name: {name}", "target: local", "network:", f"  cidr: 127.{octet}.0.0/16", "groups:"]
    for group in groups:
        zone, primary, regions = DEFAULT_GROUPS[group]
        lines += [f"  {group}:", f"    zone: {zone}", f"    primary: {primary}", "    regions:"]
        lines += [f"      {region}: {{nodes: 1}}" for region in regions]
    return "\n".join(lines) + "\n"


def lab_fleet_text(name: str, net: str, groups: tuple[str, ...] = ("us", "eu")) -> str:
    """The default fleet's shape on the ssh target, one lab host per node: us at
    <net>.11-13, eu at <net>.21-23; this machine (<net>.1) is client and operator.
    Short dial limits, so that a fault is reported within seconds."""
    lines = [
        f"name: {name}",
        "target: ssh",
        f"ssh: {{user: root, key: dbfleet/{name}/ssh, dial_error_limit: 2, per_dial_timeout_s: 3}}",
        f"firewall: {{clients: [{net}.1/32], operators: [{net}.1/32]}}",
        "groups:",
    ]
    for g, group in enumerate(groups):
        zone, primary, regions = DEFAULT_GROUPS[group]
        lines += [f"  {group}:", f"    zone: {zone}", f"    primary: {primary}", "    regions:"]
        base = 11 if group == "us" else 21
        lines += [
            f"      {region}: {{nodes: 1, hosts: [{{address: {net}.{base + k}}}]}}"
            for k, region in enumerate(regions)
        ]
    return "\n".join(lines) + "\n"
