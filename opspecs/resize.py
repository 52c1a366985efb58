"""Resize/Upsample and Pad: channels pass through where the op leaves that axis alone.

Pad amounts computed at run time (Swin pads H and W up to whole windows from the input's size) are followed
element by element: an axis whose two amounts are constant zeros passes its channels through, whatever the
others are.
"""
from __future__ import annotations

import numpy as np

from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec, Side, Updates

from ._common import element_values, int_list, unknown_shape


def _same_extent(view: NodeView, port, axes):
    if port.side == Side.IN and port.slot > 0:
        return Barrier("size/scale operand pruned")
    a, b = view.shape(IN(0)), view.shape(OUT(0))
    if a is None or b is None:
        return unknown_shape(view, IN(0))
    if any(a[x] != b[x] for x in axes):
        return Barrier(f"axes {axes} are resized")
    return [Couple(OUT(0) if port == IN(0) else IN(0), axes)]


def _rewrite_resize_sizes(view: NodeView, changes) -> Updates:
    """Resize with explicit `sizes`: the channel entry follows the pruned size."""
    sizes = view.const(3) if view.has_input(3) else None
    if sizes is None or OUT(0) not in changes:
        return Updates()
    axes = view.attr("axes")
    new_shape = changes[OUT(0)].new_shape
    if axes is None:
        return Updates(inputs={3: np.asarray(new_shape, dtype=np.int64)})
    return Updates(inputs={3: np.asarray([new_shape[int(a)] for a in axes], dtype=np.int64)})


def _pad(view: NodeView, port, axes):
    rank = view.rank(IN(0))
    if rank is None:
        return unknown_shape(view, IN(0))
    if view.opset < 11:
        pads = int_list(view.attr("pads"))
    else:  # amounts computed at run time (Swin pads H and W to whole windows): their elements, where constant
        values = element_values(view, 1) if view.has_input(1) else None
        if values is None:
            return Barrier("Pad amounts are computed at run time")
        pads = list(values.reshape(-1))
    pad_axes = list(range(rank))
    if view.opset >= 18 and view.has_input(3):
        if view.const(3) is None:
            return Barrier("Pad axes are computed at run time")
        pad_axes = [int(x) % rank for x in int_list(view.const(3))]
    n = len(pad_axes)
    if len(pads) != 2 * n:
        return Barrier(f"{len(pads)} Pad amounts for {n} axes")
    for x in axes:
        if x in pad_axes:
            k = pad_axes.index(x)
            if pads[k] is None or pads[k + n] is None:
                return Barrier(f"the Pad amounts of axis {x} are computed at run time")
            if pads[k] != 0 or pads[k + n] != 0:
                return Barrier(f"axis {x} is padded")
    return _same_extent(view, port, axes)


def register(registry) -> None:
    registry.register(OpSpec(("Resize",), _same_extent, rewrite=_rewrite_resize_sizes, family="resize"))
    registry.register(OpSpec(("Upsample",), _same_extent, family="resize"))
    registry.register(OpSpec(("Pad",), _pad, family="resize"))
