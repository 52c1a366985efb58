"""head_dim as the unit of attention pruning (``--prune-head-dim``): the same dims of every head.

A Reshape that splits hidden into (heads, head_dim) for attention maps hidden
channel c to head_dim c % D (and merging back, head_dim d to every h*D + d);
the score MatMul then contracts Q's and K's head_dim together, and the context
MatMul carries V's into the output projection's input rows. One tensor axis
prunes in one unit, so this reading replaces whole heads (an analysis choice,
:class:`onnxprune.rules.Analysis`). The softmax scale 1/sqrt(D) is a constant
of the graph and keeps its value, so pruning equals zeroing those dims.

Rotary embeddings pair dim i with i + D/2 (rotate_half: Slice halves, Neg,
Concat) or 2i with 2i+1 (strided Slices): where the split tensor is cut along
head_dim, its head_dim is a barrier with that reason (V's still prunes).
"""
from __future__ import annotations

import numpy as np

from onnxprune.mapping import Inverse, Modulo
from onnxprune.rules import IN, OUT, Barrier, Couple, Mark, NodeView, Side, Trait

# How far (in nodes) a split may be from the attention MatMul it feeds: Q passes Transpose,
# a scale and rotary embeddings; K also the repeat of grouped-query attention.
_REACH = 10
# Ops that cut an axis into parts (rotate_half's halves, interleaved rotary's even/odd dims).
_CUTTERS = ("Slice", "Split", "Gather")
# Ops that keep the head_dim axis where it is on the way from the split to the cut.
_KEEP_AXIS = ("Mul", "Div", "Add", "Sub", "Cast", "Identity")


def head_dim_answer(view: NodeView, port, axes):
    """This Reshape's answer in head_dim analysis, or None where it does not split hidden into
    (heads, head_dim) next to attention (the caller then couples as usual)."""
    merged, split = (IN(0), OUT(0)) if _rank(view, IN(0)) < _rank(view, OUT(0)) else (OUT(0), IN(0))
    m_shape, s_shape = view.shape(merged), view.shape(split)
    if m_shape is None or s_shape is None or len(axes) != 1:
        return None
    run = _split_run(m_shape, s_shape, axes[0] if port == merged else None, axes[0] if port == split else None)
    if run is None:
        return None
    m_axis, first, last = run
    sizes = [s_shape[a] for a in range(first, last)]
    real = [a for a, s in zip(range(first, last), sizes) if s > 1]
    if len(real) < 2 or any(s_shape[a] != 1 for a in range(real[-1] + 1, last)):
        return None
    inner = real[-1]
    if port == split and axes[0] != inner:
        return None
    tensor = view.tensor(split)
    if not _near_attention(view.graph, tensor, downstream=split.side == Side.OUT):
        return None
    if split.side == Side.OUT:
        cut = _cut_along(view.graph, tensor, inner, depth=0)
        if cut is not None:
            return Barrier(f"rotary embedding pairs head_dim halves ({cut} cuts head_dim {s_shape[inner]}): "
                           "prune whole heads instead")
    d = int(s_shape[inner])
    mark = Mark(Trait.HEAD_DIM, f"head_dim {d} of {int(np.prod(sizes)) // d} heads")
    if port == merged:
        return [Couple(split, (inner,), Modulo(d)), mark]
    return [Couple(merged, (m_axis,), Inverse(Modulo(d))), mark]


def _rank(view: NodeView, port) -> int:
    return view.rank(port) or 0


def _split_run(m_shape, s_shape, m_axis, s_axis):
    """(merged axis, first, end) where merged axis ``m_axis`` (or the one covering split axis
    ``s_axis``) is split axes [first, end) with the same leading extent on both sides."""
    for m in range(len(m_shape)):
        if m_axis is not None and m != m_axis:
            continue
        before, size = int(np.prod(m_shape[:m])), int(m_shape[m])
        first = next((k for k in range(len(s_shape) + 1) if int(np.prod(s_shape[:k])) == before), None)
        if first is None:
            continue
        end, extent = first, 1
        while end < len(s_shape) and extent < size:
            extent *= int(s_shape[end])
            end += 1
        while end < len(s_shape) and s_shape[end] == 1:  # trailing size-1 axes belong to the run
            end += 1
        if extent == size and (s_axis is None or first <= s_axis < end):
            return m, first, end
    return None


def _near_attention(graph, tensor: str, downstream: bool) -> bool:
    """Whether a MatMul between two activations (scores or context) is within reach."""
    frontier, seen = [tensor], {tensor}
    for _ in range(_REACH):
        nxt = []
        for name in frontier:
            if downstream:
                nodes = [node for node, _ in graph.consumers.get(name, [])]
            else:
                produced = graph.producers.get(name)
                nodes = [produced[0]] if produced else []
            for node in nodes:
                if node.op_type == "MatMul" and node.domain == "" and \
                        not any(i in graph.params for i in node.inputs):
                    return True
                for out in (node.outputs if downstream else [i for i in node.inputs if i not in graph.params]):
                    if out and out not in seen:
                        seen.add(out)
                        nxt.append(out)
        frontier = nxt
    return False


def _cut_along(graph, tensor: str, axis: int, depth: int) -> str | None:
    """The first op (following Transposes and elementwise ops) that cuts ``tensor`` along ``axis``."""
    for node, slot in graph.consumers.get(tensor, []):
        if slot != 0 and node.op_type not in _KEEP_AXIS:
            continue
        rank = len(graph.shape(tensor) or ()) or 1
        if node.op_type in _CUTTERS and slot == 0 and axis in _cut_axes(graph, node, rank):
            return f"{node.op_type} {node.name}"
        if depth >= 4:
            continue
        if node.op_type == "Transpose":
            perm = [int(p) for p in node.attrs.get("perm", list(reversed(range(rank))))]
            found = _cut_along(graph, node.outputs[0], perm.index(axis), depth + 1)
        elif node.op_type in _KEEP_AXIS and len(graph.shape(node.outputs[0]) or ()) == rank:
            found = _cut_along(graph, node.outputs[0], axis, depth + 1)
        else:
            found = None
        if found is not None:
            return found
    return None


def _cut_axes(graph, node, rank: int) -> list[int]:
    if node.op_type == "Slice":
        if "axes" in node.attrs:  # opset < 10
            return [int(a) % rank for a in node.attrs["axes"]]
        if len(node.inputs) > 3 and node.inputs[3]:
            axes = graph.params.get(node.inputs[3])
            return list(range(rank)) if axes is None else [int(a) % rank for a in np.asarray(axes).reshape(-1)]
        return list(range(rank))  # no axes input: the first ones (rarely head_dim; be safe)
    return [int(node.attrs.get("axis", 0)) % rank]
