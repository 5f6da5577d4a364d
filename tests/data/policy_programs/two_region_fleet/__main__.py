"""The real dbfleet program (as the project's __main__.py), run on this case's fleet.yaml."""

import pulumi

from dbfleet.program.main import run

run(pulumi.get_stack())
