"""dbfleet's policy pack: `pulumi preview --policy-pack policies` (docs/policies.md).

Every policy of every rule module (`rules.POLICIES`); the rules live in
`rules/<topic>.py`, where their unit tests reach them (`PolicyPack()` serves the engine
and never returns).
"""

import sys
from pathlib import Path

# The pack imports dbfleet (catalogue, fleet file, topology) from the repository it is in.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack
from rules import POLICIES
from rules.common import keep_secret_marks

keep_secret_marks()

PolicyPack(name="dbfleet", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
