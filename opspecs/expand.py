"""Expand: broadcast to a target shape (class tokens, GQA key/value repeats)."""
from __future__ import annotations

import numpy as np

from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec, Updates

from ._common import entry_value, rewrite_entries, shape_entries, unknown_shape


def _expand(view: NodeView, port, axes):
    """Axes the input already has at full size pass through; broadcast (size-1) axes are
    filled by the target shape, whose entry for a pruned axis is rewritten (if constant) or
    read at run time."""
    if port == IN(1):
        return Barrier("shape operand pruned")
    a, y = view.shape(IN(0)), view.shape(OUT(0))
    if a is None or y is None:
        return unknown_shape(view, OUT(0))
    shift = len(y) - len(a)
    if port == IN(0):
        return [Couple(OUT(0), tuple(x + shift for x in axes))]
    in_axes = tuple(x - shift for x in axes)
    carried = [i >= 0 and a[i] == y[i + shift] and a[i] != 1 for i in in_axes]
    if all(carried):
        links = [Couple(IN(0), in_axes)]
    elif any(carried):
        return Barrier(f"axes {axes} are partly broadcast")
    else:
        links = []
    entries = shape_entries(view, 1)
    if entries is None or len(entries) > len(y):
        return Barrier("Expand target cannot be traced")
    for axis, i in zip(axes, in_axes):
        k = axis - (len(y) - len(entries))
        if not (i >= 0 and a[i] != 1) and (k < 0 or entries[k] is None):
            # a broadcast axis sized at run time (static sizes are pinned before analysis): the size
            # it reads would not follow these channels
            return Barrier(f"Expand target gives axis {axis} its size at run time")
    return links


def _rewrite_expand(view: NodeView, changes) -> Updates:
    if OUT(0) not in changes:
        return Updates()
    entries = shape_entries(view, 1)
    shift = len(changes[OUT(0)].old_shape) - len(entries)
    sizes = {axis - shift: len(keep) for axis, keep in changes[OUT(0)].kept.items() if axis - shift >= 0}
    upstream = rewrite_entries(view, entries, sizes, keep_values=(-1, 1))
    return Updates(upstream=upstream)


def _tile(view: NodeView, port, axes):
    """Tile repeats the input ``repeats[i]`` times along axis i: axes repeated once pass through
    unchanged; a repeated axis holds copies of every channel (a barrier), except where the input has
    one (``x.repeat(1, C, 1, 1)`` of a (1, 1, H, W) tensor: a broadcast), whose count is rewritten.
    The repeats may be built at run time (a Concat of constants and sizes read from shapes): the
    entries of the queried axes must be constants."""
    if port == IN(1):
        return Barrier("repeats operand pruned")
    entries = shape_entries(view, 1)
    if entries is None:
        return Barrier("Tile repeats are computed at run time")
    if any(not 0 <= a < len(entries) or entries[a] is None for a in axes):
        return Barrier(f"Tile repeats along axis {axes[0]} are computed at run time")
    repeats = {a: entry_value(view, entries[a]) for a in axes}
    shape = view.shape(IN(0))
    if port == OUT(0) and shape is not None and all(shape[a] == 1 for a in axes):
        return []  # copies of one element: the repeat count is the output's size
    tiled = [a for a in axes if repeats[a] != 1]
    if tiled:
        return Barrier(f"tiled along axis {tiled[0]}: every channel is repeated")
    return [Couple(OUT(0) if port == IN(0) else IN(0), tuple(axes))]


def _rewrite_tile(view: NodeView, changes) -> Updates:
    """A broadcast axis (input size 1) pruned at the output: its repeat count is the new size."""
    if OUT(0) not in changes or IN(0) in changes:
        return Updates()
    shape = view.shape(IN(0))
    sizes = {axis: len(keep) for axis, keep in changes[OUT(0)].kept.items() if shape[axis] == 1}
    if not sizes:
        return Updates()
    if view.const(1) is not None:
        repeats = np.array(view.const(1), copy=True)
        for axis, size in sizes.items():
            repeats.reshape(-1)[axis] = size
        return Updates(inputs={1: repeats})
    return Updates(upstream=rewrite_entries(view, shape_entries(view, 1), sizes, keep_values=()))


def register(registry) -> None:
    registry.register(OpSpec(("Expand",), _expand, rewrite=_rewrite_expand, materializes=True, family="expand"))
    registry.register(OpSpec(("Tile",), _tile, since=6, rewrite=_rewrite_tile, materializes=True, family="expand"))
