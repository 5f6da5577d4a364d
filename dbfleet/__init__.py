"""dbfleet: multi-region PostgreSQL fleets as code, on Pulumi.

The package has two sides, and its folders say which a module is on:

- `dbfleet/model/`   the fleet as data: region catalogue, fleet file, stack names and
                     the layer graph, network plan. Pure Python, used by both sides.
- `dbfleet/program/` what runs inside `pulumi up`: the program and its layers.
- `dbfleet/ops/`     the operator tool (`dbfleet ...`), built on the Automation API.
- `dbfleet/vault.py` the one module that talks to Vault, used by both sides.
- `dbfleet/client.py`, `dbfleet/web.py`  for applications on a fleet (read-your-writes
                     tokens, WSGI/ASGI middleware); they import neither Pulumi nor
                     the sides above.
"""

from pathlib import Path

# The project directory of a checkout (Pulumi.yaml, stacks/, policies/).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
