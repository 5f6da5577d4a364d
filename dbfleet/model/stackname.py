"""Parses a stack name `<layer>-<group>` (the only place that knows its shape)."""

from __future__ import annotations

from dataclasses import dataclass

LAYERS = ("accounts", "networks", "replicas", "proxies")


class StackNameError(ValueError):
    pass


@dataclass(frozen=True)
class StackName:
    layer: str
    group: str

    def __str__(self) -> str:
        return f"{self.layer}-{self.group}"

    def upstream(self, layer: str) -> str:
        """The name of this group's stack of another layer."""
        return f"{layer}-{self.group}"


def parse_stack_name(name: str) -> StackName:
    layer, sep, group = name.partition("-")
    if not sep or layer not in LAYERS or not group:
        raise StackNameError(
            f"stack {name!r} is not named <layer>-<group> with layer one of {', '.join(LAYERS)}"
        )
    return StackName(layer, group)
