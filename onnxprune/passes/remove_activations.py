"""UPDP-style depth pruning inside a block: an activation between two linear layers replaced
by the identity, so that fusion merges the two layers into one (one layer fewer to run).

Only activations whose removal lets the layers merge are candidates: the activation reads a
layer's output that nothing else reads, its output is read by one layer only, and
:class:`onnxprune.passes.fusion.MergeConsecutive` accepts the two layers once it is gone
(exact padding, no more multiply-adds). The removal is inexact: the map says the
activation's output stands for nothing and marks everything after it changed, so recovery
re-fits the merged layer to the original tensor its output stands for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from ..edits import GraphEditor
from ..errors import PlanError
from ..ir import Graph
from ..registry import Registry
from . import Match, PassResult, RewritePass
from .fusion.common import Shared
from .fusion.linear import MergeConsecutive


@dataclass(frozen=True)
class Candidate:
    node: str  # the activation
    first: str  # main node of the layer before it
    second: str  # ... and after it

    @property
    def key(self) -> str:
        return self.node


class RemoveActivation(Shared):
    """A :class:`Rewrite`: each activation between two layers (of ``wanted`` where given) goes;
    its readers read its input."""

    name = "remove activations"

    def __init__(self, registry: Registry, tied: Mapping[str, str] | None = None, wanted: set[str] | None = None):
        super().__init__(registry, tied)
        self.wanted = wanted

    def find(self, graph: Graph) -> Iterable[Match]:
        for candidate in between_layers(graph, self.registry, self.tied):
            if self.wanted is None or candidate.node in self.wanted:
                yield Match((candidate.node,), candidate)

    def check(self, graph: Graph, match: Match) -> str | None:
        return None  # between_layers lists only activations between two layers

    def rewrite(self, graph: Graph, match: Match, editor: GraphEditor) -> None:
        node = graph.node_by_name[match.data.node]
        editor.remove_node(node.name)
        editor.reroute(node.outputs[0], node.inputs[0])  # its readers compute other values now
        editor.map_tensor(node.outputs[0], None)


def between_layers(graph: Graph, registry: Registry, tied: Mapping[str, str] | None = None) -> list[Candidate]:
    """Removable activations that sit between two linear layers (no check that they would merge)."""
    scope = Shared(registry, tied).scope(graph)
    found = []
    for node in graph.nodes:
        spec = scope.spec(node)
        if spec is None or not spec.removable_activation or not node.inputs or len(node.outputs) != 1:
            continue
        first = scope.layer_by_output.get(node.inputs[0])
        readers = scope.readers(node.outputs[0])
        if first is None or scope.private(node.inputs[0], node.name) or len(readers) != 1 \
                or node.outputs[0] in graph.graph_output_names:
            continue
        second = scope.layers.get(readers[0].name)
        if second is None or second.input != node.outputs[0] or graph.shape(node.inputs[0]) is None \
                or graph.shape(node.inputs[0]) != graph.shape(node.outputs[0]):
            continue
        found.append(Candidate(node.name, first.node.name, second.node.name))
    return found


def candidates(graph: Graph, registry: Registry, tied: Mapping[str, str] | None = None) -> tuple[list[Candidate], dict]:
    """(activations whose removal lets their two layers merge, {activation: why not} for the others)."""
    merge = MergeConsecutive(registry, tied)
    kept, refused = [], {}
    for candidate in between_layers(graph, registry, tied):
        trial = remove_activations(graph, registry, [candidate.node], tied).run(graph).graph
        scope = merge.scope(trial)
        first, second = scope.layers[candidate.first], scope.layers[candidate.second]
        reason = merge.check(trial, Match(first.nodes + second.nodes, (candidate.first, candidate.second)))
        if reason is None:
            kept.append(candidate)
        else:
            refused[candidate.node] = f"its layers would not merge: {reason}"
    return kept, refused


def remove_activations(graph: Graph, registry: Registry, names: Iterable[str],
                       tied: Mapping[str, str] | None = None) -> RewritePass:
    """The pass that removes exactly the activations ``names`` of ``graph`` (PlanError naming one
    that is no activation between two layers there)."""
    names = list(dict.fromkeys(names))
    present = {c.node for c in between_layers(graph, registry, tied)}
    missing = [n for n in names if n not in present]
    if missing:
        raise PlanError(f"node {missing[0]!r} is no activation between two linear layers in this model "
                        "(was the plan made on another model?)")
    return RewritePass(RemoveActivation(registry, tied, set(names)), until_fixed=False)


def check_removed(result: PassResult, names) -> None:
    if result.changed != len(list(names)):
        raise PlanError(f"removed {result.changed} of {len(list(names))} activations")


__all__ = ["Candidate", "RemoveActivation", "between_layers", "candidates", "remove_activations", "check_removed"]
