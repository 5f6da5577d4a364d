"""dbfleet.ops.graph: the DOT text of a fleet, and its rendering with Graphviz."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from dbfleet.model.spec import load_fleet
from dbfleet.model.topology import nearest_first
from dbfleet.ops import graph

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet():
    # Parsed once for the module: the models are frozen.
    return load_fleet(ROOT / "stacks" / "fleet.yaml")


def _nodes(dot: str) -> dict[str, str]:
    return {
        m.group(1): m.group(2)
        for m in re.finditer(r'^\s+"([a-z]+/[a-z]+)" \[(.*)\];$', dot, re.MULTILINE)
    }


def test_one_cluster_per_group_and_one_node_per_region(fleet) -> None:
    dot = graph.to_dot(fleet)
    assert dot.startswith("digraph dbfleet {") and dot.rstrip().endswith("}")
    assert re.findall(r'subgraph "cluster_(\w+)"', dot) == list(fleet.groups)
    nodes = _nodes(dot)
    assert set(nodes) == {f"{g}/{r}" for g, spec in fleet.groups.items() for r in spec.regions}
    assert 'label="group eu — zone EU"' in dot


def test_the_primary_is_bold_and_streams_to_every_other_region(fleet) -> None:
    dot = graph.to_dot(fleet)
    nodes = _nodes(dot)
    for g, spec in fleet.groups.items():
        for region in spec.regions:
            is_primary = region == spec.primary
            assert ("penwidth=2.5" in nodes[f"{g}/{region}"]) == is_primary
            assert ("\\nprimary · 1 node" in nodes[f"{g}/{region}"]) == is_primary
        wal = re.findall(rf'"{g}/(\w+)" -> "{g}/(\w+)" \[label="WAL"', dot)
        assert sorted(wal) == sorted((spec.primary, r) for r in spec.regions if r != spec.primary)


def test_each_region_lists_its_read_failover_order(fleet) -> None:
    nodes = _nodes(graph.to_dot(fleet))
    for g, spec in fleet.groups.items():
        for region, others in nearest_first(list(spec.regions)).items():
            assert f"reads fail over to: {' → '.join(others)}" in nodes[f"{g}/{region}"]
    assert "reads fail over to: lhr → arn" in nodes["eu/fra"]


def test_a_subset_of_groups(fleet) -> None:
    dot = graph.to_dot(fleet, ["eu"])
    assert "cluster_eu" in dot and "cluster_us" not in dot and '"us/' not in dot


def test_output_format_from_the_extension() -> None:
    assert graph.output_format(Path("a.SVG")) == "svg"
    assert graph.output_format(Path("a.png")) == "png"
    assert graph.output_format(Path("a.gv")) == "dot"
    assert graph.output_format(Path("a.txt"), "svg") == "svg"
    with pytest.raises(ValueError, match="cannot tell the format"):
        graph.output_format(Path("a.txt"))


def test_dot_text_is_written_without_graphviz(
    fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    out = tmp_path / "fleet.dot"
    graph.render(graph.to_dot(fleet), out, "dot")
    assert out.read_text().startswith("digraph")
    with pytest.raises(graph.GraphvizMissing, match="apt-get install graphviz"):
        graph.render(graph.to_dot(fleet), tmp_path / "fleet.svg", "svg")


@pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz `dot` is not installed (make setup installs it)"
)
def test_graphviz_renders_svg_and_png(fleet, tmp_path: Path) -> None:
    svg, png = tmp_path / "fleet.svg", tmp_path / "fleet.png"
    graph.render(graph.to_dot(fleet), svg, "svg")
    graph.render(graph.to_dot(fleet), png, "png")
    text = svg.read_text()
    assert "<svg" in text and "Frankfurt (DE)" in text and "group us — zone US" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
