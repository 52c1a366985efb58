"""Reshape targets read from fixed sizes at run time, pinned as constants before analysis (issue 17).

TorchScript exports compute every view's target from ``Shape`` reads, even of
sizes the model fixes: torchvision's Swin reads ``B, H, W, C = x.shape`` once,
then views the windows as ``(B, H/w, w, W/w, w, C)``, q/k/v as ``(B*nW, N, 3,
heads, C // heads)`` and the attention output as ``(B*nW, N, C)``, all from the
block input's C; nn.MultiheadAttention unflattens q/k/v with the input's width.
A pruned axis whose size comes from another tensor's shape keeps its old size
at run time, so the Reshape rule barriers those axes ("takes axis 5 from the
shape of ... (before a layer)").

Where such an element depends only on static dims (the model declares them;
batch and sequence stay symbolic), its value is the same for every input the
model accepts: this pass puts it in the target as a constant, which the
Reshape rule then rewrites with the pruned size. Elements computed from
symbolic dims stay run-time pieces, read from the same tensors as before.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from onnxprune.ir import Graph, Node
from onnxprune.passes import PassResult
from onnxprune.shapes import is_symbolic

from ._common import static_elements


class PinStaticReshapeTargets:
    name = "pin reshape target sizes read from static dims"

    def __init__(self, registry=None):
        self.registry = registry

    def run(self, graph: Graph) -> PassResult:
        pinned, count = pin_static_targets(graph)
        notes = (f"{count} Reshape targets read fixed sizes from tensor shapes at run time: those sizes pinned "
                 "as constants (so pruning can rewrite them)",) if count else ()
        return PassResult(self.name, pinned, count, notes)


def pin_static_targets(graph: Graph) -> tuple[Graph, int]:
    params, replace, count = dict(graph.params), {}, 0
    for node in graph.nodes:
        if node.op_type != "Reshape" or node.domain or len(node.inputs) < 2 or not node.inputs[1]:
            continue
        target = node.inputs[1]
        if target in graph.params:
            continue
        new = _pinned(graph, node, target, params)
        if new is None:
            continue
        added, name = new
        replace[node.name] = added + [dataclasses.replace(node, inputs=[node.inputs[0], name] + node.inputs[2:])]
        count += 1
    if not count:
        return graph, 0
    nodes = [m for n in graph.nodes for m in replace.get(n.name, [n])]
    return dataclasses.replace(graph, nodes=nodes, params=params), count


def _pinned(graph: Graph, node: Node, target: str, params):
    """(nodes to add before ``node``, its new target) or None where nothing new is constant."""
    values = static_elements(graph, target)
    if values is None or values.ndim != 1 or not any(_pinnable(v) for v in values):
        return None
    if all(_pinnable(v) for v in values):
        return [], _const(graph, params, f"{node.name}_target", list(values))
    produced = graph.producers.get(target)
    concat = produced[0] if produced else None
    if concat is None or concat.op_type != "Concat" or concat.domain or int(concat.attrs.get("axis", 0)) not in (0, -1):
        return None
    pieces, offset, changed = [], 0, False
    for k, piece in enumerate(concat.inputs):
        length = _length(graph, piece)
        if length is None:
            return None
        part = values[offset: offset + length]
        offset += length
        if not len(part):  # an empty piece (unflatten's dims after the last): nothing to keep
            changed = True
        elif piece not in graph.params and all(_pinnable(v) for v in part):
            pieces.append(_const(graph, params, f"{node.name}_target_{k}", list(part)))
            changed = True
        else:
            pieces.append(piece)
    if not changed or offset != len(values):
        return None
    out, name = _fresh(graph, params, f"{target}_pinned"), f"{node.name}_pinned_target"
    while name in graph.node_by_name:
        name += "_"
    return [Node(name, "Concat", "", pieces, [out], attrs={"axis": 0})], out


def _length(graph: Graph, piece: str) -> int | None:
    """A 1-D Concat piece's length: inferred, or else counted from its traced elements."""
    shape = graph.shape(piece)
    if shape is not None:
        return int(shape[0]) if len(shape) == 1 and isinstance(shape[0], int) and not is_symbolic(shape[0]) else None
    values = static_elements(graph, piece)
    return None if values is None or values.ndim != 1 else len(values)


def _pinnable(value) -> bool:
    """A known size (0 and -1 mean copy and infer in a target: those stay as the exporter computed them)."""
    return value is not None and int(value) > 0


def _fresh(graph: Graph, params, name: str) -> str:
    while name in params or name in graph.values or name in graph.producers or name in graph.consumers:
        name += "_"
    return name


def _const(graph: Graph, params, name: str, values) -> str:
    name = _fresh(graph, params, name)
    params[name] = np.asarray([int(v) for v in values], dtype=np.int64)
    return name


def register(registry) -> None:
    registry.register_pass(PinStaticReshapeTargets)
