"""Fold weights that a model builds from constants into parameters.

Old zoo models (AlexNet, ZFNet) and some converters store a layer's weight as
a small constant and the node that fills, broadcasts or repeats it
(``OpSpec.materializes``). Rules slice parameters, not the nodes that build
them, so such a layer cannot prune until the built tensor is a parameter.
Only tensors that reach a layer's weight input (an input after the first of a
node whose rule owns channels) are folded: other constant-built tensors (a
filled bias added to activations, an initial state) stay as they are.
"""
from __future__ import annotations

import dataclasses

from ..ir import Graph
from ..registry import Registry
from ..rules import no_roots
from . import PassResult
from .fold_shapes import evaluate_node

MAX_FOLDED_WEIGHT = 1 << 27  # elements: larger than any single layer weight we expect to rebuild


class FoldConstantWeights:
    name = "fold constant-built weights"

    def __init__(self, registry: Registry):
        self.registry = registry

    def run(self, graph: Graph) -> PassResult:
        folded, ops = fold_constant_weights(graph, self.registry)
        notes = ()
        if ops:
            kinds = ", ".join(sorted(set(ops)))
            notes = (f"{len(ops)} weights built from constants ({kinds}) folded into initializers",)
        return PassResult(self.name, folded, len(ops), notes)


def fold_constant_weights(graph: Graph, registry: Registry) -> tuple[Graph, list[str]]:
    """Return (graph with those nodes replaced by parameters, the op type of each folded node)."""
    specs = {n.name: registry.lookup(n.domain, n.op_type, graph.meta.opsets.get(n.domain, graph.opset))
             for n in graph.nodes}
    weight_bound = set()
    for node in graph.nodes:
        spec = specs[node.name]
        if spec is not None and spec.roots is not no_roots:
            weight_bound.update(name for name in node.inputs[1:] if name)
    for node in reversed(graph.nodes):  # through chains of builders (Tile of an Expand)
        spec = specs[node.name]
        if spec is not None and spec.materializes and any(o in weight_bound for o in node.outputs):
            weight_bound.update(name for name in node.inputs if name)
    params, keep, ops = dict(graph.params), [], []
    outputs = graph.graph_output_names
    for node in graph.nodes:
        spec = specs[node.name]
        foldable = (spec is not None and spec.materializes and not node.implicit_inputs
                    and node.outputs[0] in weight_bound and node.outputs[0] not in outputs
                    and all(not name or name in params for name in node.inputs))
        results = _fold(node, params, graph) if foldable else None
        if results is None:
            keep.append(node)
            continue
        params.update(zip(node.outputs, results))
        ops.append(node.op_type)
    if not ops:
        return graph, []
    return dataclasses.replace(graph, nodes=keep, params=params), ops


def _fold(node, params, graph: Graph):
    try:
        results = evaluate_node(node, [params[name] if name else None for name in node.inputs],
                            graph.meta.opsets.get(node.domain, graph.opset))
    except Exception:  # the reference evaluator cannot run it: leave the node
        return None
    if any(r.size > MAX_FOLDED_WEIGHT for r in results):
        return None
    return results
