"""Concat, Split and Slice: channels along the joined/cut axis map by offset."""
from __future__ import annotations

import numpy as np

from onnxprune.mapping import Affine
from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec, Side, Updates

from ._common import int_list, unknown_shape


def _along(view: NodeView, port, axes, axis, pieces, whole, offsets):
    """Shared by Concat (pieces = inputs) and Split (pieces = outputs)."""
    if axis not in axes:
        others = [p for p in pieces + [whole] if p != port]
        return [Couple(p, axes) for p in others]
    if axes != (axis,):
        return Barrier(f"axis {axis} merged with others {axes}")
    if port == whole:
        return [Couple(p, axes, Affine(off).inverse()) for p, off in zip(pieces, offsets)]
    return [Couple(whole, axes, Affine(offsets[pieces.index(port)]))]


def _concat(view: NodeView, port, axes):
    rank = view.rank(OUT(0))
    if rank is None:
        return unknown_shape(view, OUT(0))
    axis = int(view.attr("axis")) % rank
    pieces = [IN(i) for i in range(view.n_inputs)]
    shapes = [view.shape(p) for p in pieces]
    if any(s is None for s in shapes):
        return unknown_shape(view, pieces[[s is None for s in shapes].index(True)])
    offsets = list(np.cumsum([0] + [s[axis] for s in shapes[:-1]]))
    return _along(view, port, axes, axis, pieces, OUT(0), offsets)


def _split_sizes(view: NodeView) -> list[int] | None:
    shapes = [view.shape(OUT(i)) for i in range(view.n_outputs)]
    if any(s is None for s in shapes):
        return None
    rank = len(shapes[0])
    axis = int(view.attr("axis", 0)) % rank
    return [s[axis] for s in shapes]


def _split(view: NodeView, port, axes):
    if port.side == Side.IN and port.slot > 0:
        return Barrier("Split sizes pruned")
    rank = view.rank(IN(0))
    sizes = _split_sizes(view)
    if rank is None or sizes is None:
        return unknown_shape(view, IN(0))
    axis = int(view.attr("axis", 0)) % rank
    if axis in axes and view.has_input(1) and view.const(1) is None:
        return Barrier("Split sizes are computed at run time")
    pieces = [OUT(i) for i in range(view.n_outputs)]
    offsets = list(np.cumsum([0] + sizes[:-1]))
    return _along(view, port, axes, axis, pieces, IN(0), offsets)


def _rewrite_split(view: NodeView, changes) -> Updates:
    rank = view.rank(IN(0))
    axis = int(view.attr("axis", 0)) % rank
    old = _split_sizes(view)
    new = [changes[OUT(i)].new_size(axis) if OUT(i) in changes else old[i] for i in range(view.n_outputs)]
    if new == old:
        return Updates()
    if "split" in view.node.attrs:
        return Updates(attrs={"split": new})
    if view.opset >= 18 and "num_outputs" in view.node.attrs:
        # num_outputs and the split input are exclusive: keep num_outputs only while it splits evenly
        if len(set(new)) == 1:
            return Updates()
        return Updates(attrs={"num_outputs": None}, inputs={1: np.asarray(new, dtype=np.int64)})
    if view.opset >= 13:
        return Updates(inputs={1: np.asarray(new, dtype=np.int64)})
    return Updates(attrs={"split": new})


def _slice_params(view: NodeView):
    """(starts, ends, axes, steps) as lists, from attributes (opset < 10) or constant inputs."""
    rank = view.rank(IN(0))
    if view.opset < 10:
        starts, ends = view.attr("starts"), view.attr("ends")
        axes = view.attr("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        values = [view.const(i) if view.has_input(i) else None for i in range(1, 5)]
        if values[0] is None or values[1] is None or (view.has_input(3) and values[2] is None) \
                or (view.has_input(4) and values[3] is None):
            return None
        starts, ends = int_list(values[0]), int_list(values[1])
        axes = int_list(values[2]) if values[2] is not None else list(range(len(starts)))
        steps = int_list(values[3]) if values[3] is not None else [1] * len(starts)
    return [int(s) for s in starts], [int(e) for e in ends], [int(a) % rank for a in axes], steps


def _sliced_axes(view: NodeView) -> list[int] | None:
    """The axes a Slice cuts, when they are constant even if its bounds are not."""
    rank = view.rank(IN(0))
    if rank is None or view.opset < 10:
        return None
    if not view.has_input(3):
        n = view.shape(IN(1))
        return list(range(n[0])) if n is not None and len(n) == 1 else None
    axes = view.const(3)
    return None if axes is None else [int(a) % rank for a in np.asarray(axes).reshape(-1)]


def _clamped_start(start: int, step: int, size: int) -> int:
    if start < 0:
        start += size
    return max(0, min(start, size - 1 if step < 0 else size))


def _slice(view: NodeView, port, axes):
    if port.side == Side.IN and port.slot > 0:
        return Barrier("Slice bounds pruned")
    params = _slice_params(view)
    in_shape = view.shape(IN(0))
    if params is None:
        sliced = _sliced_axes(view)
        if sliced is not None and not set(axes) & set(sliced):  # run-time bounds on other axes
            return [Couple(OUT(0) if port == IN(0) else IN(0), axes)]
        return Barrier("Slice bounds are computed at run time")
    if in_shape is None:
        return unknown_shape(view, IN(0))
    starts, ends, sliced, steps = params
    other = OUT(0) if port == IN(0) else IN(0)
    hit = [a for a in axes if a in sliced]
    if not hit:
        return [Couple(other, axes)]
    if len(axes) > 1:
        return Barrier(f"sliced axis merged with others {axes}")
    k = sliced.index(axes[0])
    if steps[k] != 1:
        return Barrier("strided Slice on a pruned axis")
    start = _clamped_start(starts[k], 1, in_shape[axes[0]])
    mapping = Affine(start)  # output j is input start + j
    return [Couple(other, axes, mapping if port == OUT(0) else mapping.inverse())]


def _rewrite_slice(view: NodeView, changes) -> Updates:
    params = _slice_params(view)
    if IN(0) not in changes or params is None:  # run-time bounds: only unsliced axes were pruned
        return Updates()
    starts, ends, sliced, steps = params
    in_shape = view.shape(IN(0))
    change = changes[IN(0)]
    new_starts, new_ends = list(starts), list(ends)
    for k, axis in enumerate(sliced):
        if axis not in change.kept:
            continue
        size = in_shape[axis]
        start = _clamped_start(starts[k], 1, size)
        end = ends[k] + size if ends[k] < 0 else ends[k]
        end = max(start, min(end, size))
        kept = change.kept[axis]
        new_starts[k] = int(np.searchsorted(kept, start))
        new_ends[k] = int(np.searchsorted(kept, end))
    if view.opset < 10:
        return Updates(attrs={"starts": new_starts, "ends": new_ends})
    return Updates(inputs={1: np.asarray(new_starts, dtype=view.const(1).dtype),
                           2: np.asarray(new_ends, dtype=view.const(2).dtype)})


def register(registry) -> None:
    registry.register(OpSpec(("Concat",), _concat, family="concat_split"))
    registry.register(OpSpec(("Split",), _split, rewrite=_rewrite_split, family="concat_split"))
    registry.register(OpSpec(("Slice",), _slice, rewrite=_rewrite_slice, family="concat_split"))
