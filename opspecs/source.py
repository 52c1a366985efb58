"""Ops that create or only inspect tensors: ConstantOfShape, Shape, Size."""
from __future__ import annotations

import numpy as np

from onnxprune.rules import IN, OUT, Barrier, NodeView, OpSpec, Updates

from ._common import rewrite_entries, shape_entries, size_reader, unknown_shape


def _constant_of_shape(view: NodeView, port, axes):
    """A filled tensor: any axis whose size is a constant (the whole shape, or a constant piece of a
    shape built at run time: ``zeros_like`` of a tensor with a symbolic batch) shrinks by rewriting it."""
    if port != OUT(0):
        return Barrier("ConstantOfShape shape is computed at run time")
    if view.const(0) is not None:
        return []
    entries = shape_entries(view, 0)
    if entries is None or any(a >= len(entries) or entries[a] is None for a in axes):
        return Barrier("ConstantOfShape shape is computed at run time")
    return []


def _rewrite_constant_of_shape(view: NodeView, changes) -> Updates:
    if OUT(0) not in changes:
        return Updates()
    if view.const(0) is not None:
        return Updates(inputs={0: np.asarray(changes[OUT(0)].new_shape, dtype=np.int64)})
    sizes = {axis: len(keep) for axis, keep in changes[OUT(0)].kept.items()}
    return Updates(upstream=rewrite_entries(view, shape_entries(view, 0), sizes, keep_values=()))


def _inspect(view: NodeView, port, axes):
    """Shape/Size read only the extent, which is recomputed at run time: pruning the read axes is
    fine where that size goes nowhere (sizes of other axes are read), or only into a Reshape target
    (whose rule checks the axis it sizes). A size that reaches anything else (an Expand or Tile target,
    a Slice bound, a ConstantOfShape or Range, arithmetic on values) would change what that op does
    without the op pruning with these channels: a barrier naming it. Sizes of static dims are pinned
    as constants before analysis (static_targets.py), so they reach nothing at run time."""
    if port != IN(0):
        return Barrier("shape values are not channels")
    rank = view.rank(IN(0))
    if rank is None:
        return unknown_shape(view, IN(0))
    if view.node.op_type == "Size":
        positions = {0}
    else:
        start, end = _shape_range(view, rank)
        positions = {a - start for a in axes if start <= a < end}
    reader = size_reader(view.graph, view.node.outputs[0], positions)
    if reader is None:
        return []
    axis = next(a for a in axes if view.node.op_type == "Size" or a - _shape_range(view, rank)[0] in positions)
    return Barrier(f"the size of axis {axis} of {view.tensor(IN(0))} is read at run time by {reader}")


def _shape_range(view: NodeView, rank: int) -> tuple[int, int]:
    start, end = int(view.attr("start", 0)), int(view.attr("end", rank))
    return tuple(max(0, min(rank, v + rank if v < 0 else v)) for v in (start, end))


def _fold_shape(view: NodeView):
    shape = view.shape(IN(0))
    if shape is None:
        return None
    start, end = view.attr("start", 0), view.attr("end", None)
    return np.asarray(shape[start:end], dtype=np.int64)


def _fold_size(view: NodeView):
    shape = view.shape(IN(0))
    return None if shape is None else np.asarray(int(np.prod(shape)), dtype=np.int64)


def _random(view: NodeView, port, axes):
    return Barrier("random values")


RANDOM = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli")


def register(registry) -> None:
    registry.register(OpSpec(RANDOM, _random, foldable=False, family="source"))
    registry.register(OpSpec(("ConstantOfShape",), _constant_of_shape,
                             rewrite=_rewrite_constant_of_shape, materializes=True, family="source"))
    registry.register(OpSpec(("Shape",), _inspect, fold=_fold_shape, family="source"))
    registry.register(OpSpec(("Size",), _inspect, fold=_fold_size, family="source"))
