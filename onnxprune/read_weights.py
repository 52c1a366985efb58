"""Weights as the layers read them, for scoring.

A model may store a weight in another form than the one its layer reads: fp16
or bf16 behind a cast to float, int8 behind a cast, a zero point subtracted and
a scale multiplied (weight-only quantization), or transposed. Channels are
sliced where they are stored, in the stored dtype (the rules do that); but
their importance is the size of what the layer reads, in float: the raw int8
values of a channel say little before their zero point and scale are applied.
"""
from __future__ import annotations

import numpy as np

from .depgraph import DependencyGraph, End, EndKind, Group
from .ir import Graph


def storage_only(graph: Graph, tensor: str) -> bool:
    """A parameter that no layer reads as it is: every reader turns it into another constant
    (a cast, a dequantization) and it is no graph output."""
    readers = graph.consumers.get(tensor, [])
    derived = graph.constant_derived
    return (tensor in graph.params and bool(readers) and tensor not in graph.graph_output_names
            and all(slot >= 0 and all(not o or o in derived for o in node.outputs) for node, slot in readers))


def read_as_weight(graph: Graph, tensor: str) -> bool:
    """A tensor computed from parameters alone (not a parameter itself) that some node reads to
    compute a tensor that is not constant: the weight as a layer reads it."""
    derived = graph.constant_derived
    if tensor in graph.params or tensor not in derived or tensor not in graph.producers:
        return False
    return any(slot >= 0 and any(o and o not in derived for o in node.outputs)
               for node, slot in graph.consumers.get(tensor, []))


def score_ends(dg: DependencyGraph, group: Group) -> list[End]:
    """The group's weights to score: parameters read as they are, and the weights layers read
    where the stored ones are only converted (one end per tensor and axes)."""
    graph, seen, ends = dg.graph, set(), []
    decoded = {e.tensor for e in group.ends if e.kind == EndKind.PARAM and dg.stored(e.tensor) is not None}
    for end in group.ends:
        if end.kind == EndKind.PARAM and (end.tensor in decoded or not storage_only(graph, end.tensor)):
            wanted = end  # read as it is, or decoded by its reader's rule (DependencyGraph.real_value)
        elif end.kind == EndKind.OP and read_as_weight(graph, end.tensor) \
                and not decoded.intersection(graph.producers[end.tensor][0].inputs):
            wanted = end
        else:
            continue
        if (end.tensor, end.axes) not in seen:
            seen.add((end.tensor, end.axes))
            ends.append(wanted)
    return ends


class WeightValues:
    """Values of parameters and of tensors computed from them alone (evaluated once each; float64)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._raw: dict[str, np.ndarray] = dict(graph.params)  # in the stored dtypes
        self._float: dict[str, np.ndarray] = {}

    def __call__(self, tensor: str) -> np.ndarray:
        if tensor not in self._float:
            self._float[tensor] = np.asarray(self._value(tensor), dtype=np.float64)
        return self._float[tensor]

    def _value(self, tensor: str) -> np.ndarray:
        if tensor not in self._raw:
            from .passes.fold_shapes import evaluate_node  # late: the passes import the engine
            node, _ = self.graph.producers[tensor]
            inputs = [self._value(name) if name else None for name in node.inputs]
            opset = self.graph.meta.opsets.get(node.domain, self.graph.opset)
            self._raw.update((name, value) for name, value in
                             zip(node.outputs, evaluate_node(node, inputs, opset)) if name)
        return self._raw[tensor]
