"""dbfleet: builds the stack named `<layer>-<group>` from the fleet file."""

import pulumi

from dbfleet.program.main import run

run(pulumi.get_stack())
