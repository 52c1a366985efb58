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
