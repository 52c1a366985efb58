"""Sizes read from fixed dims at run time, pinned as constants before analysis (issue 17).

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

The same holds for every op that builds or cuts a tensor from sizes:
Expand/Tile targets and ConstantOfShape shapes (``expand_as``, ``repeat``,
``zeros_like``: element by element, run-time runs gathered from the same
shape), Slice bounds (``x[:, :y.size(1)]``), Range limits (``arange(C)``,
then folded into a constant) and sizes cast to floats (an attention scale
``head_dim ** -0.5``). Read at run time, such a size follows a pruned axis
into ops that do not prune with it (onnxruntime refuses the model, or a
ramp silently loses its values); as constants, the rules rewrite them where
those ops prune and leave them as they were elsewhere. Size reads that stay
at run time and reach such an op are barriers (the Shape rule, source.py).
The reads nothing uses after pinning are dropped.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from onnxprune.ir import Graph, Node
from onnxprune.passes import PassResult
from onnxprune.shapes import is_symbolic
from onnxprune.tensor_types import np_dtype

from ._common import static_elements


class PinStaticReshapeTargets:
    name = "pin sizes read from static dims"

    def __init__(self, registry=None):
        self.registry = registry

    def run(self, graph: Graph) -> PassResult:
        pinned, count = pin_static_targets(graph)
        notes = (f"{count} operands (Reshape/Expand/Tile targets, ConstantOfShape shapes, Slice bounds, Range "
                 "limits, sizes cast to floats) read fixed sizes from tensor shapes at run time: those sizes pinned "
                 "as constants (so pruning can rewrite them, or leaves them as they were)",) if count else ()
        return PassResult(self.name, pinned, count, notes)


# operands that hold sizes or positions, by op: an element computed from static dims alone is pinned. Targets
# (a 1-D shape, one element per output axis) are pinned element by element: run-time elements stay read.
_TARGETS = {"Reshape": 1, "Expand": 1, "Tile": 1, "ConstantOfShape": 0}
_WHOLE = {"Slice": (1, 2, 3, 4), "Range": (0, 1, 2), "Cast": (0,)}  # Cast: a size turned into a float (a scale)
_MAX_RANGE = 1 << 16  # a Range folded into a constant holds at most this many elements


def pin_static_targets(graph: Graph) -> tuple[Graph, int]:
    params, replace, drop, count = dict(graph.params), {}, set(), 0
    for node in graph.nodes:
        if node.domain:
            continue
        if node.op_type in _TARGETS:
            slot = _TARGETS[node.op_type]
            if slot >= len(node.inputs) or not node.inputs[slot] or node.inputs[slot] in graph.params:
                continue
            new = _pinned(graph, node, slot, params)
            if new is None:
                continue
            added, name = new
            inputs = list(node.inputs)
            inputs[slot] = name
            replace[node.name] = added + [dataclasses.replace(node, inputs=inputs)]
            count += 1
        elif node.op_type in _WHOLE:
            inputs, changed = list(node.inputs), False
            for slot in _WHOLE[node.op_type]:
                if slot >= len(inputs) or not inputs[slot] or inputs[slot] in params:
                    continue
                values = static_elements(graph, inputs[slot])
                if values is None or any(v is None for v in values.reshape(-1)):
                    continue
                inputs[slot] = _const(graph, params, f"{node.name}_in{slot}", values, _dtype(graph, inputs[slot]))
                changed = True
            if node.op_type == "Range" and _fold_range(graph, node, inputs, params):
                drop.add(node.name)
                count += 1
            elif changed:
                replace[node.name] = [dataclasses.replace(node, inputs=inputs)]
                count += 1
    if not count:
        return graph, 0
    nodes = [m for n in graph.nodes if n.name not in drop for m in replace.get(n.name, [n])]
    before = _live(graph.nodes, graph.graph_output_names)
    dead = {n.name for n in graph.nodes if n.name not in before}  # dead already: left as they were
    after = _live(nodes, graph.graph_output_names, dead)
    nodes = [n for n in nodes if n.name in after]  # drops the size reads nothing uses now
    return dataclasses.replace(graph, nodes=nodes, params=params), count


def _live(nodes, outputs, roots=frozenset()) -> set[str]:
    """Names of the nodes some graph output or some node of ``roots`` depends on (and of ``roots``)."""
    needed, live = set(outputs), set()
    for node in reversed(nodes):
        if node.name in roots or any(o in needed for o in node.outputs if o):
            live.add(node.name)
            needed.update(t for t in list(node.inputs) + list(node.implicit_inputs) if t)
    return live


def _dtype(graph: Graph, name: str):
    value = graph.values.get(name)
    return np_dtype(value.dtype) if value is not None and value.dtype else np.int64


def _fold_range(graph: Graph, node: Node, inputs, params) -> bool:
    """A Range whose bounds are all constant now is a constant (torch.arange(x.size(1))): its values go in."""
    if node.outputs[0] in graph.graph_output_names or len(inputs) != 3 or not all(i in params for i in inputs):
        return False
    start, limit, delta = (np.asarray(params[i]).reshape(()) for i in inputs)
    if delta == 0 or max(0, int(np.ceil((limit - start) / delta))) > _MAX_RANGE:
        return False
    params[node.outputs[0]] = np.arange(start, limit, delta, dtype=np.asarray(params[inputs[0]]).dtype)
    return True


def _pinned(graph: Graph, node: Node, slot: int, params):
    """(nodes to add before ``node``, its new target) or None where nothing new is constant."""
    target = node.inputs[slot]
    values = static_elements(graph, target)
    pinnable = _pinnable if node.op_type == "Reshape" else _known
    if values is None or values.ndim != 1 or not any(pinnable(v) for v in values):
        return None
    dtype = np.int64
    if all(pinnable(v) for v in values):
        return [], _const(graph, params, f"{node.name}_target", list(values), dtype)
    produced = graph.producers.get(target)
    concat = produced[0] if produced else None
    if concat is None or concat.op_type != "Concat" or concat.domain or int(concat.attrs.get("axis", 0)) not in (0, -1):
        return _runs(graph, node, target, values, pinnable, params)
    pieces, offset, changed = [], 0, False
    for k, piece in enumerate(concat.inputs):
        length = _length(graph, piece)
        if length is None:
            return None
        part = values[offset: offset + length]
        offset += length
        if not len(part):  # an empty piece (unflatten's dims after the last): nothing to keep
            changed = True
        elif piece not in graph.params and all(pinnable(v) for v in part):
            pieces.append(_const(graph, params, f"{node.name}_target_{k}", list(part), dtype))
            changed = True
        else:
            pieces.append(piece)
    if not changed or offset != len(values):
        return None
    return _concat(graph, params, node, pieces)


def _runs(graph: Graph, node: Node, target: str, values, pinnable, params):
    """A target read whole from a tensor's Shape (``expand_as``, ``zeros_like``): its static elements as
    constants, each run of run-time elements gathered from the same tensor as before."""
    pieces, nodes, start = [], [], 0
    while start < len(values):
        end = start
        known = pinnable(values[start])
        while end < len(values) and pinnable(values[end]) == known:
            end += 1
        if known:
            pieces.append(_const(graph, params, f"{node.name}_target_{start}", list(values[start:end]), np.int64))
        else:
            indices = _const(graph, params, f"{node.name}_run_{start}", list(range(start, end)), np.int64)
            out = _fresh(graph, params, f"{node.name}_run_{start}_out")
            nodes.append(Node(_node_name(graph, f"{node.name}_run_{start}"), "Gather", "", [target, indices], [out],
                              attrs={"axis": 0}))
            pieces.append(out)
        start = end
    added, out = _concat(graph, params, node, pieces)
    return nodes + added, out


def _concat(graph: Graph, params, node: Node, pieces):
    """([the Concat joining ``pieces``], its output), named after ``node`` (unique, so two readers of one
    target get a Concat each)."""
    out = _fresh(graph, params, f"{node.name}_target_pinned")
    return [Node(_node_name(graph, f"{node.name}_pinned_target"), "Concat", "", pieces, [out], attrs={"axis": 0})], out


def _node_name(graph: Graph, name: str) -> str:
    while name in graph.node_by_name:
        name += "_"
    return name


def _length(graph: Graph, piece: str) -> int | None:
    """A 1-D Concat piece's length: inferred, or else counted from its traced elements."""
    shape = graph.shape(piece)
    if shape is not None:
        return int(shape[0]) if len(shape) == 1 and isinstance(shape[0], int) and not is_symbolic(shape[0]) else None
    values = static_elements(graph, piece)
    return None if values is None or values.ndim != 1 else len(values)


def _pinnable(value) -> bool:
    """A known size (0 and -1 mean copy and infer in a Reshape target: those stay as the exporter computed them)."""
    return value is not None and int(value) > 0


def _known(value) -> bool:
    return value is not None


def _fresh(graph: Graph, params, name: str) -> str:
    while name in params or name in graph.values or name in graph.producers or name in graph.consumers:
        name += "_"
    return name


def _const(graph: Graph, params, name: str, values, dtype=np.int64) -> str:
    name = _fresh(graph, params, name)
    params[name] = np.asarray(values, dtype=object).astype(np.int64).astype(dtype)
    return name


def register(registry) -> None:
    registry.register_pass(PinStaticReshapeTargets)
