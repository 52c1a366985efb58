"""Depth pruning as a rewrite: a residual block replaced by its skip path.

The branch's nodes and the join go; every reader of the join's output y reads the skip
input s instead. That is the original model with the branch's output r set to zero, so
the readers now compute other values: the map says y stands for nothing and marks
everything after it changed (recovery re-fits and re-estimates from there).
"""
from __future__ import annotations

from typing import Iterable

from ..blocks import BlockKey, find_blocks
from ..edits import GraphEditor
from ..errors import PlanError
from ..ir import Graph
from ..registry import Registry
from . import Match, PassResult, RewritePass


class RemoveBlock:
    """A :class:`Rewrite`: every removable block is a match (its branch and join, ``data``: the Block)."""

    name = "remove blocks"

    def __init__(self, registry: Registry):
        self.registry = registry

    def find(self, graph: Graph) -> Iterable[Match]:
        for block in find_blocks(graph, self.registry).blocks:
            yield Match(block.nodes + (block.join,), block)

    def check(self, graph: Graph, match: Match) -> str | None:
        return None  # discovery lists removable blocks only (find_blocks says why the others are not)

    def rewrite(self, graph: Graph, match: Match, editor: GraphEditor) -> None:
        block = match.data
        for name in match.nodes:
            editor.remove_node(name)
        editor.reroute(block.output, block.skip)
        editor.map_tensor(block.output, None)  # y = s + r: nothing holds its values any more


def remove_blocks(graph: Graph, registry: Registry, keys: Iterable[BlockKey]) -> RewritePass:
    """The pass that removes exactly the blocks ``keys`` (join node, skip tensor) of ``graph``.

    Raises PlanError naming a key that is no removable block of ``graph`` (a plan made on
    another model), or two keys whose blocks overlap (nested: remove the outer one only)."""
    keys = list(dict.fromkeys(tuple(k) for k in keys))
    blocks = find_blocks(graph, registry).by_key()
    missing = [k for k in keys if k not in blocks]
    if missing:
        join, skip = missing[0]
        raise PlanError(f"no removable block joins at node {join!r} with skip input {skip!r} in this model "
                        "(was the plan made on another model?)")
    chosen = [blocks[k] for k in keys]
    for i, a in enumerate(chosen):
        for b in chosen[i + 1:]:
            if a.overlaps(b):
                raise PlanError(f"blocks at {a.join!r} and {b.join!r} overlap (nested): remove one of them")
    wanted = set(keys)
    return RewritePass(RemoveBlock(registry), until_fixed=False, select=lambda m: m.data.key in wanted)


def check_removed(result: PassResult, keys) -> None:
    """Every asked block went (a pass that silently removed fewer would leave a wrong record)."""
    if result.changed != len(list(keys)):
        raise PlanError(f"removed {result.changed} of {len(list(keys))} blocks: " + "; ".join(result.refused))
