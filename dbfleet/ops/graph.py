"""`dbfleet graph`: a picture of the fleet, drawn with Graphviz.

One box per region group (its residency zone), one node per region with its city,
node count and role; the primary is drawn bold. Edges are streaming replication
(primary → each replica region), and each region's label lists its read-failover
order: where its proxy sends reads when its own nodes are down, nearest first (the
order `networks-<g>` computes and `proxies-<g>` uses).

The picture is of the fleet file — what `dbfleet up` makes — so it can be drawn
and reviewed before anything is deployed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from dbfleet.model.catalogue import REGIONS
from dbfleet.model.spec import FleetSpec
from dbfleet.model.topology import nearest_first

FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot", ".pdf": "pdf"}
PRIMARY_FILL = "#ffe8cc"
REPLICA_FILL = "#e7f5ff"


def _q(text: str) -> str:
    """A DOT string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def node_id(group: str, region: str) -> str:
    return _q(f"{group}/{region}")


def to_dot(fleet: FleetSpec, groups: list[str] | None = None) -> str:
    chosen = [g for g in fleet.groups if groups is None or g in groups]
    lines = [
        "digraph dbfleet {",
        (
            f"  graph [rankdir=LR, fontname=Helvetica, labelloc=t, label={_q(f'fleet {fleet.name}')}, "
            "nodesep=0.4, ranksep=0.9];"
        ),
        '  node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=11];',
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    for g in chosen:
        group = fleet.groups[g]
        lines.append(f"  subgraph {_q('cluster_' + g)} {{")
        lines.append(
            f'    label={_q(f"group {g} — zone {group.zone}")}; style=rounded; color="#868e96";'
        )
        order = nearest_first(list(group.regions))
        for code, region in group.regions.items():
            info = REGIONS.get(code)
            place = f"{info.city} ({info.country})" if info else code
            role = "primary" if code == group.primary else "replica"
            nodes = f"{region.nodes} node{'s' if region.nodes != 1 else ''}"
            failover = " → ".join(order[code]) or "none"
            label = "\n".join((code, place, f"{role} · {nodes}", f"reads fail over to: {failover}"))
            attrs = [
                f"label={_q(label)}",
                f"fillcolor={_q(PRIMARY_FILL if role == 'primary' else REPLICA_FILL)}",
            ]
            if role == "primary":
                attrs.append("penwidth=2.5")
            lines.append(f"    {node_id(g, code)} [{', '.join(attrs)}];")
        lines.append("  }")
    for g in chosen:
        group = fleet.groups[g]
        for code in group.regions:
            if code != group.primary:
                lines.append(
                    f"  {node_id(g, group.primary)} -> {node_id(g, code)} "
                    '[label="WAL", color="#1c7ed6", penwidth=1.5];'
                )
    lines.append(
        '  legend [shape=note, style=filled, fillcolor="#f8f9fa", fontsize=9, label='
        + _q(
            "bold: the group's primary region\nWAL: streaming replication, primary → replica\n"
            "reads fail over to: where a region's proxy sends reads\nwhen its own nodes are down, nearest first"
        )
        + "];"
    )
    lines.append("}")
    return "\n".join(lines) + "\n"


class GraphvizMissing(RuntimeError):
    pass


def output_format(path: Path, explicit: str | None = None) -> str:
    if explicit:
        return explicit
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: cannot tell the format from the extension; use .svg, .png, .pdf or .dot"
        )
    return fmt


def render(dot_text: str, out: Path, fmt: str) -> None:
    """Writes the picture to `out` (DOT text as is, anything else through `dot`)."""
    if fmt == "dot":
        out.write_text(dot_text)
        return
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing(
            "Graphviz `dot` is not installed (Debian: apt-get install graphviz; `make setup` installs it); "
            "write the DOT text instead with --out FILE.dot"
        )
    proc = subprocess.run(
        [exe, f"-T{fmt}", "-o", str(out)],
        input=dot_text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dot -T{fmt} failed: {proc.stderr.strip()}")
