"""The fleet file that tests and benchmarks bring up: the default fleet (README,
DESIGN) with a fleet name and loopback range of its own, so it never meets a fleet
brought up with `make up`. Kept here, not read from stacks/fleet.yaml, which users edit."""


def default_fleet_text(name: str, octet: int) -> str:
    return f"""name: {name}
target: local
network:
  cidr: 127.{octet}.0.0/16
groups:
  us:
    zone: US
    primary: iad
    regions:
      iad: {{nodes: 1}}
      ord: {{nodes: 1}}
      sjc: {{nodes: 1}}
  eu:
    zone: EU
    primary: fra
    regions:
      fra: {{nodes: 1}}
      lhr: {{nodes: 1}}
      arn: {{nodes: 1}}
"""
