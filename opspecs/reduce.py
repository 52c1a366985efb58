"""Reductions and Softmax.

Reducing over the pruned channels (the mean and variance of RMSNorm and of
LayerNorm written out as ReduceMean/Sub/Pow/Sqrt/Div) stays valid with fewer
channels but computes a different statistic: such groups are marked as the
hidden size (pruned only on request, reported as inexact). Softmax over the
pruned axis is a barrier."""
from __future__ import annotations

from onnxprune.rules import IN, OUT, Barrier, Couple, Mark, NodeView, OpSpec, Side, Trait

from ._common import int_list, unknown_shape

REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def _reduced_axes(view: NodeView, rank: int) -> list[int] | None:
    if view.has_input(1):
        value = view.const(1)
        if value is None:
            return None
        axes = int_list(value)
    else:
        axes = view.attr("axes")
    if not axes:
        return [] if int(view.attr("noop_with_empty_axes", 0)) else list(range(rank))
    return sorted(int(a) % rank for a in axes)


def _reduce(view: NodeView, port, axes):
    if port.side == Side.IN and port.slot > 0:
        return Barrier("reduction axes operand pruned")
    rank = view.rank(IN(0))
    if rank is None:
        return unknown_shape(view, IN(0))
    reduced = _reduced_axes(view, rank)
    if reduced is None:
        return Barrier("reduction axes are computed at run time")
    keep = int(view.attr("keepdims", 1))
    if port == IN(0):
        if any(a in reduced for a in axes):
            if all(a in reduced for a in axes):  # a statistic over the channels (norm mean/variance)
                return [Mark(Trait.STATISTICS, f"{view.node.op_type} over the pruned axis")]
            return Barrier(f"axes {axes} are partly reduced over")
        return [Couple(OUT(0), tuple(a if keep else a - sum(r < a for r in reduced) for a in axes))]
    survivors = [a for a in range(rank) if keep or a not in reduced]
    in_axes = tuple(survivors[a] for a in axes)
    if any(a in reduced for a in in_axes):
        return Barrier(f"axes {axes} are reduced over")
    return [Couple(IN(0), in_axes)]


def _softmax(view: NodeView, port, axes):
    rank = view.rank(IN(0))
    if rank is None:
        return unknown_shape(view, IN(0))
    axis = int(view.attr("axis", -1 if view.opset >= 13 else 1)) % rank
    # before opset 13 the input is coerced to 2D: everything from `axis` on is normalized
    normalized = {axis} if view.opset >= 13 else set(range(axis, rank))
    if any(a in normalized for a in axes):
        return Barrier(f"axes {axes} are normalized over")
    return [Couple(OUT(0) if port == IN(0) else IN(0), axes)]


def register(registry) -> None:
    registry.register(OpSpec(REDUCE, _reduce, family="reduce"))
    registry.register(OpSpec(("Softmax", "LogSoftmax", "Hardmax"), _softmax, family="reduce"))
