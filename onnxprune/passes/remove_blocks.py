"""Depth pruning as a rewrite: a residual block replaced by its skip path.

The branch's nodes and the join go; every reader of the join's output y reads the skip
input s instead. That is the original model with the branch's output r set to zero, so
the readers now compute other values: the map says y stands for nothing and marks
everything after it changed (recovery re-fits and re-estimates from there). A join of more
addends stays, less the removed branches' addends: y keeps its name, marked changed.
"""
from __future__ import annotations

import copy
from typing import Iterable

from ..blocks import BlockKey, find_blocks
from ..edits import GraphEditor
from ..errors import PlanError
from ..ir import Graph
from ..registry import Registry
from . import Match, PassResult, RewritePass


class RemoveBlock:
    """A :class:`Rewrite`: one match per join, holding the blocks ``wanted`` there (all where None;
    ``data``: the Blocks), their branches and the join."""

    name = "remove blocks"

    def __init__(self, registry: Registry, wanted: set[BlockKey] | None = None):
        self.registry, self.wanted = registry, wanted

    def find(self, graph: Graph) -> Iterable[Match]:
        by_join: dict[str, list] = {}
        for block in find_blocks(graph, self.registry).blocks:
            if self.wanted is None or block.key in self.wanted:
                by_join.setdefault(block.join, []).append(block)
        for join, blocks in by_join.items():
            yield Match(tuple(n for b in blocks for n in b.nodes) + (join,), tuple(blocks))

    def check(self, graph: Graph, match: Match) -> str | None:
        return None  # discovery lists removable blocks only (find_blocks says why the others are not)

    def rewrite(self, graph: Graph, match: Match, editor: GraphEditor) -> None:
        join = graph.node_by_name[match.nodes[-1]]
        for name in match.nodes[:-1]:
            editor.remove_node(name)
        gone = {block.residual for block in match.data}
        kept = [t for t in join.inputs if t not in gone]
        output = join.outputs[0]
        if len(kept) == 1 and output not in graph.graph_output_names:
            editor.remove_node(join.name)
            editor.reroute(output, kept[0])
            editor.map_tensor(output, None)  # y = s + r: nothing holds its values any more
        else:  # the join adds what is left
            new = copy.copy(join)
            new.inputs = kept
            editor.replace_node(join.name, new)
            editor.mark_changed(output)


def remove_blocks(graph: Graph, registry: Registry, keys: Iterable[BlockKey]) -> RewritePass:
    """The pass that removes exactly the blocks ``keys`` (join node, skip tensor) of ``graph``.

    Raises PlanError naming a key that is no removable block of ``graph`` (a plan made on
    another model), or two keys whose blocks overlap (nested: remove the outer one only)."""
    keys = list(dict.fromkeys(tuple(k) for k in keys))
    blocks = find_blocks(graph, registry).by_key()
    missing = [k for k in keys if k not in blocks]
    if missing:
        join, residual = missing[0]
        raise PlanError(f"no removable block joins at node {join!r} with residual input {residual!r} in this model "
                        "(was the plan made on another model?)")
    chosen = [blocks[k] for k in keys]
    for i, a in enumerate(chosen):
        for b in chosen[i + 1:]:
            if a.overlaps(b):
                raise PlanError(f"blocks at {a.join!r} and {b.join!r} overlap (nested): remove one of them")
    return RewritePass(RemoveBlock(registry, set(keys)), until_fixed=False)


def check_removed(result: PassResult, keys) -> None:
    """Every asked block went (a pass that silently removed fewer would leave a wrong record); the
    pass counts joins, each with its blocks."""
    joins = {join for join, _ in keys}
    if result.changed != len(joins):
        raise PlanError(f"removed blocks at {result.changed} of {len(joins)} joins: " + "; ".join(result.refused))
