"""Reshape-like ops (row-major order kept) and Transpose (axis permutation)."""
from __future__ import annotations

import numpy as np

from onnxprune.mapping import IDENTITY, Overlap
from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec, Side, Updates

from ._common import entry_value, reshape_links, rewrite_entries, shape_entries, unknown_shape
from .head_dim import head_dim_answer


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
    """Reshape keeps row-major order. Its target may be built at run time (Concat of Shape
    pieces and constants, 0 and -1): constant pieces are rewritten, run-time pieces read the
    pruned sizes when the model runs. Splitting one axis into several (hidden -> heads x
    head_dim) couples whole blocks: the leading split axis (heads) is the channel; in head_dim
    analysis, attention's splits couple head_dim instead (see head_dim.py)."""
    if port.side == Side.IN and port.slot > 0:
        return Barrier("shape operand pruned")
    answer = head_dim_answer(view, port, axes) if view.analysis.head_dim else None
    if answer is None:
        answer = _reshape_like(view, port, axes)
        if isinstance(answer, Barrier) or not answer:
            return answer
        link = answer[0]
        if len(axes) == 1 and len(link.axes) > 1 and link.mapping == IDENTITY:
            link = _split_blocks(view, link) or link
        answer = [link]
    elif isinstance(answer, Barrier):
        return answer
    link = answer[0]
    out_axes = axes if port == OUT(0) else link.axes
    if view.opset >= 5 and view.const(1) is None:
        entries = shape_entries(view, 1)
        if entries is None or len(entries) != len(view.shape(OUT(0))):
            return Barrier("Reshape target is computed at run time and cannot be traced")
        for axis in out_axes:
            if entry_value(view, entries[axis]) == 0 and not _copies_axis(port, axes, link, axis):
                return Barrier(f"Reshape target copies (0) a pruned dim from another axis")
    return answer


def _copies_axis(port, axes, link, axis) -> bool:
    """A 0 in the target copies the input dim at the same index: fine if that axis maps to itself."""
    return link.mapping == IDENTITY and tuple(axes) == tuple(link.axes) == (axis,)


def _split_blocks(view: NodeView, link: Couple) -> Couple | None:
    """hidden -> (heads, head_dim): couple to the leading split axis, each channel a block.

    Not where the blocks are then interleaved (a channel shuffle transposes the split axes
    against each other) or picked apart (Gather/Slice/Split along the block axis, as for the
    two directions of an RNN): there the element-wise coupling keeps more prunable."""
    split_port = link.port
    shape = view.shape(split_port)
    sizes = [shape[a] for a in link.axes]
    lead = next((k for k, s in enumerate(sizes) if s > 1), None)
    if lead is None or lead == len(sizes) - 1 or not _blocks_stay_whole(view, split_port, link.axes, lead):
        return None
    inner = int(np.prod(sizes[lead + 1:]))
    return Couple(split_port, (link.axes[lead],), Overlap(1, inner))


_PICKERS = {"Gather": "axis", "Slice": None, "Split": "axis"}


def _blocks_stay_whole(view: NodeView, port, axes, lead: int) -> bool:
    graph, tensor = view.graph, view.tensor(port)
    if port.side == Side.IN:  # merging blocks back: look at where they were made
        producer = graph.producers.get(tensor)
        if producer is None or producer[0].op_type != "Transpose":
            return True
        rank = len(view.shape(port))
        perm = [int(p) for p in producer[0].attrs.get("perm", list(reversed(range(rank))))]
        where = [perm[a] for a in axes]
        return where == sorted(where)
    return _whole_downstream(graph, tensor, list(axes), lead, depth=0)


def _whole_downstream(graph, tensor, axes, lead, depth) -> bool:
    for node, slot in graph.consumers.get(tensor, []):
        if node.op_type == "Transpose" and slot == 0:
            rank = len(graph.shape(tensor) or ())
            perm = [int(p) for p in node.attrs.get("perm", list(reversed(range(rank))))]
            moved = [perm.index(a) for a in axes]
            if moved != sorted(moved):
                return False  # a shuffle: the split axes swap places
            if depth < 3 and not _whole_downstream(graph, node.outputs[0], moved, lead, depth + 1):
                return False
        elif node.op_type in _PICKERS and slot == 0 and _picks_axis(graph, node, axes[lead]):
            return False
    return True


def _picks_axis(graph, node, axis) -> bool:
    rank = len(graph.shape(node.inputs[0]) or ()) or 1
    if node.op_type == "Slice":
        if len(node.inputs) > 3 and node.inputs[3] in graph.params:
            return axis in [int(a) % rank for a in np.asarray(graph.params[node.inputs[3]]).reshape(-1)]
        return True
    return int(node.attrs.get(_PICKERS[node.op_type], 0)) % rank == axis


def _rewrite_reshape(view: NodeView, changes) -> Updates:
    if OUT(0) not in changes:
        return Updates()
    change = changes[OUT(0)]
    sizes = {axis: len(keep) for axis, keep in change.kept.items()}
    allow_zero = int(view.attr("allowzero", 0))
    keep_values = (-1,) if allow_zero else (-1, 0)
    if view.opset < 5:
        target = [int(x) for x in view.attr("shape")]
        return Updates(attrs={"shape": [sizes.get(i, d) if d not in keep_values else d for i, d in enumerate(target)]})
    if view.const(1) is not None:
        target = [int(x) for x in view.const(1).reshape(-1)]
        new = [sizes.get(i, d) if d not in keep_values else d for i, d in enumerate(target)]
        return Updates(inputs={1: np.asarray(new, dtype=np.int64)})
    return Updates(upstream=rewrite_entries(view, shape_entries(view, 1), sizes, keep_values))


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
