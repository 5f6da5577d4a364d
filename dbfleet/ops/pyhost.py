"""The Python that dbfleet's commands give Pulumi's Python language host.

Before every `up`, `preview`, `refresh` and `destroy`, Pulumi v3.79's language host asks
which plugins the program needs by running `python -m pip list -v --format json` and
looking for packages that carry a `pulumi-plugin.json`. That one question costs about
0.5 s of CPU (pip imports itself and more), as much as running the program: a fleet of
two groups pays it on each of its eight stacks, every command.

dbfleet's commands point the language host (PULUMI_PYTHON_CMD) at the small wrapper
next to this file, `pulumi_python`: it runs the Python dbfleet itself runs on for
everything, except that one question, which it answers by running this file: the same
list (name, version, location of every installed distribution, the first on sys.path
winning, as with pip) from `importlib.metadata`, in a few tens of milliseconds. An
operator who sets PULUMI_PYTHON_CMD keeps theirs; `pulumi up` run by hand asks pip.

Run as a script (`python pyhost.py`), it prints that list; it imports the standard
library only, so it needs neither dbfleet nor Pulumi on the path.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import MutableMapping
from importlib import metadata
from pathlib import Path

WRAPPER = Path(__file__).resolve().with_name("pulumi_python")


def installed() -> list[dict[str, str]]:
    """What `pip list -v --format json` says of the interpreter running this: one entry
    per distribution name (normalised as pip does), from the first sys.path entry
    that has it."""
    seen: set[str] = set()
    found = []
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        location = str(Path(str(dist.locate_file(""))).resolve())
        found.append(
            {"name": name, "version": dist.version, "location": location, "installer": "pip"}
        )
    return found


def use_for_engine(env: MutableMapping[str, str] = os.environ) -> None:
    """Every pulumi process dbfleet starts (they inherit `env`) runs the program on this
    Python, through the wrapper; an operator's own PULUMI_PYTHON_CMD is left alone."""
    if env.get("PULUMI_PYTHON_CMD"):
        return
    env["PULUMI_PYTHON_CMD"] = str(WRAPPER)
    env["DBFLEET_PYTHON"] = sys.executable


if __name__ == "__main__":
    json.dump(installed(), sys.stdout)
    sys.stdout.write("\n")
