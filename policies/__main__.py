"""dbfleet's policy pack: `pulumi preview --policy-pack policies` (docs/policies.md).

A thin list: every rule lives in `rules/<topic>.py`, where its unit tests reach it
(`PolicyPack()` serves the engine and never returns).
"""

import sys
from pathlib import Path

# The pack imports dbfleet (catalogue, fleet file, topology) from the repository it is in.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack
from rules import authentication, durability, exposure, residency, secrets, stack_shape
from rules.common import keep_secret_marks

keep_secret_marks()

PolicyPack(
    name="dbfleet",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        residency.residency,
        residency.residency_outputs,
        secrets.no_plaintext_secrets,
        secrets.no_plaintext_secret_outputs,
        exposure.exposure,
        durability.durability,
        authentication.authentication,
        stack_shape.stack_shape,
    ],
)
