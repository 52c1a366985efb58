"""Reshape-like ops (row-major order kept) and Transpose (axis permutation)."""
from __future__ import annotations

import numpy as np

from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec, Side, Updates

from ._common import reshape_links, unknown_shape


def _reshape_like(view: NodeView, port, axes):
    if port.side == Side.IN and port.slot > 0:
        return Barrier("shape operand pruned")
    a, b = view.shape(IN(0)), view.shape(OUT(0))
    if a is None or b is None:
        return unknown_shape(view, OUT(0) if a is not None else IN(0))
    if port == IN(0):
        return reshape_links(a, b, axes, OUT(0))
    return reshape_links(b, a, axes, IN(0))


def _reshape(view: NodeView, port, axes):
    if view.opset >= 5 and view.has_input(1) and view.const(1) is None:
        # a run-time shape is fine only where it reads -1 or copies a dim (0)
        return Barrier("Reshape target shape is computed at run time")
    return _reshape_like(view, port, axes)


def _rewrite_reshape(view: NodeView, changes) -> Updates:
    if OUT(0) not in changes:
        return Updates()
    target = view.const(1) if view.opset >= 5 else np.asarray(view.attr("shape"))
    new_shape = changes[OUT(0)].new_shape
    allow_zero = int(view.attr("allowzero", 0))
    new = [d if (d == -1 or (d == 0 and not allow_zero)) else new_shape[i] for i, d in enumerate(int(x) for x in target)]
    if view.opset < 5:
        return Updates(attrs={"shape": new})
    return Updates(inputs={1: np.asarray(new, dtype=np.int64)})


def _rewrite_squeeze(view: NodeView, changes) -> Updates:
    """Squeeze without axes drops every size-1 axis: pin the originally size-1 axes,
    so an axis pruned down to a single channel is not squeezed away too."""
    if IN(0) not in changes or view.has_input(1) or "axes" in view.node.attrs:
        return Updates()
    axes = [a for a, d in enumerate(changes[IN(0)].old_shape) if d == 1]
    if view.opset >= 13:
        return Updates(inputs={1: np.asarray(axes, dtype=np.int64)})
    return Updates(attrs={"axes": axes})


def _transpose(view: NodeView, port, axes):
    rank = view.rank(IN(0))
    if rank is None:
        return unknown_shape(view, IN(0))
    perm = [int(p) for p in view.attr("perm", list(reversed(range(rank))))]
    if port == IN(0):
        return [Couple(OUT(0), tuple(perm.index(a) for a in axes))]
    return [Couple(IN(0), tuple(perm[a] for a in axes))]


def register(registry) -> None:
    registry.register(OpSpec(("Reshape",), _reshape, rewrite=_rewrite_reshape, family="shape"))
    registry.register(OpSpec(("Flatten", "Unsqueeze"), _reshape_like, family="shape"))
    registry.register(OpSpec(("Squeeze",), _reshape_like, rewrite=_rewrite_squeeze, family="shape"))
    registry.register(OpSpec(("Transpose",), _transpose, family="shape"))
