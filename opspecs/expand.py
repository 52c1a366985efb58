"""Expand: broadcast to a target shape (class tokens, GQA key/value repeats)."""
from __future__ import annotations

from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec, Updates

from ._common import rewrite_entries, shape_entries, unknown_shape


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
    unchanged; a repeated axis holds copies of every channel (a barrier)."""
    if port == IN(1):
        return Barrier("repeats operand pruned")
    repeats = view.const(1)
    if repeats is None:
        return Barrier("Tile repeats are computed at run time")
    repeats = [int(r) for r in repeats.reshape(-1)]
    tiled = [a for a in axes if not 0 <= a < len(repeats) or repeats[a] != 1]
    if tiled:
        return Barrier(f"tiled along axis {tiled[0]}: every channel is repeated")
    return [Couple(OUT(0) if port == IN(0) else IN(0), tuple(axes))]


def register(registry) -> None:
    registry.register(OpSpec(("Expand",), _expand, rewrite=_rewrite_expand, materializes=True, family="expand"))
    registry.register(OpSpec(("Tile",), _tile, since=6, materializes=True, family="expand"))
