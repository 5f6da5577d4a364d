"""Stack names `<layer>-<group>` and the layer graph: the one place that knows
which layers exist, in which order they are applied, and which layer reads which."""

from __future__ import annotations

from dataclasses import dataclass

# The layers in the order they are applied (destroy runs them in reverse).
LAYERS = ("accounts", "networks", "replicas", "proxies")

# Which layers each layer reads through StackReferences. A layer reads nothing
# else (StackName.upstream refuses), so this is the whole graph.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "accounts": (),
    "networks": ("accounts",),
    "replicas": ("accounts", "networks"),
    "proxies": ("accounts", "networks", "replicas"),
}


def downstream(layer: str) -> tuple[str, ...]:
    """The layers that read `layer`."""
    return tuple(other for other, ups in UPSTREAM.items() if layer in ups)


class StackNameError(ValueError):
    pass


@dataclass(frozen=True)
class StackName:
    layer: str
    group: str

    def __str__(self) -> str:
        return f"{self.layer}-{self.group}"

    def upstream(self, layer: str) -> str:
        """The name of this group's stack of a layer this layer reads."""
        if layer not in UPSTREAM[self.layer]:
            raise StackNameError(
                f"the {self.layer} layer does not read the {layer} layer "
                f"(it reads: {', '.join(UPSTREAM[self.layer]) or 'nothing'})"
            )
        return f"{layer}-{self.group}"

    def upstream_stacks(self) -> tuple[str, ...]:
        """Every stack this stack reads."""
        return tuple(self.upstream(layer) for layer in UPSTREAM[self.layer])


def parse_stack_name(name: str) -> StackName:
    layer, sep, group = name.partition("-")
    if not sep or layer not in LAYERS or not group:
        raise StackNameError(
            f"stack {name!r} is not named <layer>-<group> with layer one of {', '.join(LAYERS)}"
        )
    return StackName(layer, group)
