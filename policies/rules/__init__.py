"""dbfleet's policies, one module per topic; each module lists its policies in `POLICIES`.

`POLICIES` here is every policy of every rule module, in the order the pack runs them
(`policies/__main__.py`). A new rule module goes into `RULE_MODULES`; a unit test fails
while a module of this package that has `POLICIES` is missing from it.
"""

from . import authentication, backup, durability, exposure, residency, secrets, stack_shape, tls

RULE_MODULES = (
    residency,
    secrets,
    exposure,
    durability,
    authentication,
    stack_shape,
    tls,
    backup,
)
POLICIES = [policy for module in RULE_MODULES for policy in module.POLICIES]
