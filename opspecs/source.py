"""Ops that create or only inspect tensors: ConstantOfShape, Shape, Size."""
from __future__ import annotations

import numpy as np

from onnxprune.rules import IN, OUT, Barrier, NodeView, OpSpec, Updates


def _constant_of_shape(view: NodeView, port, axes):
    if port == OUT(0) and view.const(0) is not None:
        return []  # a filled tensor: any axis can shrink by rewriting its shape
    return Barrier("ConstantOfShape shape is computed at run time")


def _rewrite_constant_of_shape(view: NodeView, changes) -> Updates:
    if OUT(0) not in changes:
        return Updates()
    return Updates(inputs={0: np.asarray(changes[OUT(0)].new_shape, dtype=np.int64)})


def _inspect(view: NodeView, port, axes):
    """Shape/Size read only the extent, which is recomputed at run time."""
    return [] if port == IN(0) else Barrier("shape values are not channels")


def register(registry) -> None:
    registry.register(OpSpec(("ConstantOfShape",), _constant_of_shape,
                             rewrite=_rewrite_constant_of_shape, family="source"))
    registry.register(OpSpec(("Shape", "Size"), _inspect, family="source"))
