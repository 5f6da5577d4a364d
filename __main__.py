"""dbfleet: builds the stack named `<layer>-<group>` from the fleet file."""

import pulumi

from dbfleet.program import run

run(pulumi.get_stack())
