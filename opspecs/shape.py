"""Reshape-like ops (row-major order kept) and Transpose (axis permutation)."""
from __future__ import annotations

import numpy as np

from onnxprune.mapping import IDENTITY, Inverse, Marginal, Modulo, Overlap
from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec, Side, Updates

from ._common import entry_value, reshape_links, rewrite_entries, runtime_sources, shape_entries, unknown_shape
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
        if isinstance(answer, Barrier) and len(axes) == 1:
            answer = _from_middle_block(view, port, axes[0]) or _from_group_channel(view, port, axes[0]) or answer
        if isinstance(answer, Barrier) or not answer:
            return answer
        link = answer[0]
        if len(axes) == 1 and len(link.axes) > 1 and link.mapping == IDENTITY:
            link = _group_channels(view, link) or _split_blocks(view, link) or link
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
                return Barrier("Reshape target copies (0) a pruned dim from another axis")
            others = runtime_sources(view, 1, axis) if entries[axis] is None else None
            if others is not None and not others:
                return Barrier(f"Reshape target computes axis {axis} at run time from constants alone")
            behind = _behind_a_layer(view.graph, view.node.inputs[0], others) if others else None
            if behind:
                return Barrier(f"Reshape target takes axis {axis} from the shape of {behind} (before a layer) "
                               "at run time")
    return answer


def _unit_axes(view: NodeView, port, axes):
    """Squeeze / Unsqueeze drop or add axes of size 1: every other axis keeps its order and size, so
    each queried axis maps to exactly one axis on the other side (any rank, any axes). The unit axes
    are the ``axes`` attribute or operand; without them (Squeeze: every size-1 axis), or computed at
    run time, the sizes tell where each axis larger than 1 goes."""
    if port.side == Side.IN and port.slot > 0:
        return Barrier("axes operand pruned")
    a, b = view.shape(IN(0)), view.shape(OUT(0))
    if a is None or b is None:
        return unknown_shape(view, OUT(0) if a is not None else IN(0))
    squeeze = view.node.op_type == "Squeeze"
    longer, shorter = (a, b) if squeeze else (b, a)
    unit = _listed_axes(view, len(longer))
    if unit is None and squeeze and not view.has_input(1) and "axes" not in view.node.attrs:
        unit = [i for i, d in enumerate(a) if d == 1]
    if unit is not None and len(longer) - len(unit) == len(shorter):
        kept = [i for i in range(len(longer)) if i not in unit]  # kept[j]: axis of the longer side for shorter j
    else:  # axes unknown: match the axes larger than 1 in order; unit axes cannot be placed
        big_long = [i for i, d in enumerate(longer) if d != 1]
        big_short = [j for j, d in enumerate(shorter) if d != 1]
        if len(big_long) != len(big_short):
            return Barrier("Squeeze/Unsqueeze axes are computed at run time and the shapes do not tell them")
        kept = [None] * len(shorter)
        for i, j in zip(big_long, big_short):
            kept[j] = i
    to_long = {j: i for j, i in enumerate(kept) if i is not None}
    on_long = (port == IN(0)) == squeeze
    mapped = [{i: j for j, i in to_long.items()}.get(x) if on_long else to_long.get(x) for x in axes]
    if any(m is None for m in mapped):
        return Barrier(f"axes {tuple(axes)} are unit axes this node drops or adds")
    return [Couple(OUT(0) if port == IN(0) else IN(0), tuple(mapped))]


def _listed_axes(view: NodeView, rank: int) -> list[int] | None:
    """The ``axes`` of Squeeze/Unsqueeze (attribute before opset 13, operand since), normalised; None if unknown."""
    if "axes" in view.node.attrs:
        values = view.attr("axes")
    elif view.has_input(1):
        values = view.const(1)
        if values is None:
            return None
    else:
        return None
    return sorted({int(x) % rank for x in np.asarray(values).reshape(-1)}) if rank else None


def _behind_a_layer(graph, tensor: str, sources) -> str | None:
    """A source the reshaped ``tensor`` comes from only through a layer (a node with a constant weight
    of rank >= 2: torch's unflatten of in_proj's output reads the width of in_proj's *input*). Sources
    reached without one (the same values broadcast or transposed, as in GQA's repeat) are fine; reaching
    a tensor's Shape (an earlier view's target) is not reaching its values."""
    direct, through, frontier = {tensor}, set(), [(tensor, False)]
    for _ in range(16):
        step = []
        for name, crossed in frontier:
            produced = graph.producers.get(name)
            if produced is None:
                continue
            node = produced[0]
            if node.op_type == "Shape":  # a size read, not the values: the tensor is not reached through it
                continue
            layer = crossed or any(i in graph.constant_derived and graph.shape(i) is not None
                                   and len(graph.shape(i)) >= 2 for i in node.inputs[1:] if i)
            for i in node.inputs:
                if i and i not in graph.params and i not in (through if layer else direct):
                    (through if layer else direct).add(i)
                    step.append((i, layer))
        frontier = step
    found = [s for s in sorted(sources) if s in through and s not in direct]
    return found[0] if found else None


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
    real = [k for k, s in enumerate(sizes) if s > 1]
    if len(real) < 2:
        return None
    lead = real[0]
    if not _blocks_stay_whole(view, split_port, link.axes, lead):
        # q, k and v split at once ((3, heads, head_dim), then picked apart): the heads are the blocks
        if len(real) < 3 or split_port.side != Side.OUT or \
                not _picked_downstream(view.graph, view.tensor(split_port), link.axes[lead], depth=0):
            return None
        lead = real[1]
        if not _blocks_stay_whole(view, split_port, link.axes, lead):
            return None
        return Couple(split_port, (link.axes[lead],), Marginal(tuple(int(s) for s in sizes), (lead,)))
    inner = int(np.prod(sizes[lead + 1:]))
    return Couple(split_port, (link.axes[lead],), Overlap(1, inner))


def _from_middle_block(view: NodeView, port, axis: int) -> list | None:
    """From the heads axis of a (3, heads, head_dim) split back to the merged axis: the inverse of the
    coupling :func:`_split_blocks` gives from the merged side, where it gives one."""
    def block(link: Couple) -> Couple | None:
        found = _split_blocks(view, link)
        return found if found is not None and isinstance(found.mapping, Marginal) else None

    return _back_to_merged(view, port, axis, block)


def _group_channels(view: NodeView, link: Couple) -> Couple | None:
    """C -> (groups, C / groups) for a grouped linear layer (an Einsum ``btgc,gcd->btgd`` whose weight carries
    both the group and the channel letter): channel c of every group goes together (``Modulo``), so each
    group's weight slice stays dense; merging (groups, D) back, the same. Elsewhere None: whole blocks."""
    split_port = link.port
    shape = view.shape(split_port)
    sizes = [shape[a] for a in link.axes]
    real = [k for k, size in enumerate(sizes) if size > 1]
    if len(real) != 2 or any(sizes[k] != 1 for k in range(real[1] + 1, len(sizes))):
        return None
    group, inner = link.axes[real[0]], link.axes[real[1]]
    if not _grouped_layer(view.graph, view.tensor(split_port), group, inner, split_port.side == Side.OUT):
        return None
    return Couple(split_port, (inner,), Modulo(int(sizes[real[1]])))


def _from_group_channel(view: NodeView, port, axis: int) -> list | None:
    """From a group's channel axis back to the merged axis: the inverse of :func:`_group_channels`."""
    return _back_to_merged(view, port, axis, lambda link: _group_channels(view, link))


def _back_to_merged(view: NodeView, port, axis: int, forward) -> list | None:
    """From ``axis`` of the split side back to the merged side: the merged axis whose ``forward`` coupling
    (from the merged side, given its reshape link) lands on ``axis`` alone, inverted; else None."""
    other = OUT(0) if port == IN(0) else IN(0)
    a, b = view.shape(port), view.shape(other)
    if a is None or b is None or len(a) <= len(b):
        return None
    for m_axis in range(len(b)):
        links = reshape_links(b, a, (m_axis,), port)
        if isinstance(links, Barrier) or len(links[0].axes) < 2 or axis not in links[0].axes:
            continue
        link = forward(links[0])
        if link is not None and link.axes == (axis,):
            return [Couple(other, (m_axis,), Inverse(link.mapping))]
    return None


def _grouped_layer(graph, tensor: str, group: int, inner: int, downstream: bool) -> bool:
    """Whether ``tensor`` is read (downstream) or made (upstream) by an Einsum with a constant operand that
    carries the letters of both its ``group`` and ``inner`` axes: a grouped linear layer."""
    if downstream:
        readers = [(node, slot) for node, slot in graph.consumers.get(tensor, [])]
    else:
        produced = graph.producers.get(tensor)
        readers = [(produced[0], None)] if produced else []
    for node, slot in readers:
        if node.op_type != "Einsum" or node.domain or len(node.inputs) != 2:
            continue
        terms = _einsum_terms(node)
        constant = [node.inputs[k] in graph.constant_derived for k in range(2)]
        if terms is None or constant.count(True) != 1:
            continue
        weight = constant.index(True)
        data = 1 - weight
        if downstream and slot != data:
            continue
        mine = terms[data] if downstream else terms[2]
        if len(mine) > max(group, inner) and mine[group] in terms[weight] and mine[inner] in terms[weight]:
            return True
    return False


def _einsum_terms(node) -> list[str] | None:
    """(first input, second input, output) letters of a two-operand Einsum without an ellipsis, or None."""
    equation = node.attrs.get("equation", b"")
    equation = (equation.decode() if isinstance(equation, bytes) else str(equation)).replace(" ", "")
    if "->" not in equation or "..." in equation:
        return None
    lhs, rhs = equation.split("->")
    terms = lhs.split(",")
    return terms + [rhs] if len(terms) == 2 else None


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
    shape = view.shape(port)
    return _whole_downstream(graph, tensor, [a for a in axes[lead:] if shape[a] != 1], depth=0)


def _whole_downstream(graph, tensor, axes, depth) -> bool:
    """``axes``: the split axes larger than 1, the block axis first. Followed through Transposes
    and the Unsqueeze/Squeeze that add or drop unit axes around them (torch's packed q, k, v:
    unflatten, unsqueeze, transpose, squeeze, then select)."""
    for node, slot in graph.consumers.get(tensor, []):
        moved = None
        if node.op_type == "Transpose" and slot == 0:
            rank = len(graph.shape(tensor) or ())
            perm = [int(p) for p in node.attrs.get("perm", list(reversed(range(rank))))]
            moved = [perm.index(a) for a in axes]
            if moved != sorted(moved):
                return False  # a shuffle: the split axes swap places
        elif node.op_type in ("Unsqueeze", "Squeeze") and slot == 0:
            moved = _unit_axes_moved(graph.shape(tensor), graph.shape(node.outputs[0]), axes)
            if moved is None:
                return False
        elif node.op_type in _PICKERS and slot == 0 and _picks_axis(graph, node, axes[0]):
            return False
        if moved is not None and depth < 4 and not _whole_downstream(graph, node.outputs[0], moved, depth + 1):
            return False
    return True


def _picked_downstream(graph, tensor, axis, depth) -> bool:
    """Whether a Gather/Slice/Split picks ``axis`` of ``tensor`` apart (past Transposes and unit axes)."""
    for node, slot in graph.consumers.get(tensor, []):
        if slot != 0:
            continue
        if node.op_type in _PICKERS and _picks_axis(graph, node, axis):
            return True
        moved = None
        if node.op_type == "Transpose":
            rank = len(graph.shape(tensor) or ())
            moved = [int(p) for p in node.attrs.get("perm", list(reversed(range(rank))))].index(axis)
        elif node.op_type in ("Unsqueeze", "Squeeze"):
            shape = graph.shape(tensor)
            if shape is not None and shape[axis] != 1:
                found = _unit_axes_moved(shape, graph.shape(node.outputs[0]), [axis])
                moved = found[0] if found else None
        if moved is not None and depth < 4 and _picked_downstream(graph, node.outputs[0], moved, depth + 1):
            return True
    return False


def _unit_axes_moved(before, after, axes):
    """Where ``axes`` (all larger than 1) are after unit axes were added or dropped, or None."""
    if before is None or after is None:
        return None
    big_before = [a for a, d in enumerate(before) if d != 1]
    big_after = [a for a, d in enumerate(after) if d != 1]
    if len(big_before) != len(big_after):
        return None
    return [big_after[big_before.index(a)] for a in axes]


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
    registry.register(OpSpec(("Flatten",), _reshape_like, family="shape"))
    registry.register(OpSpec(("Unsqueeze",), _unit_axes, family="shape"))
    registry.register(OpSpec(("Squeeze",), _unit_axes, rewrite=_rewrite_squeeze, family="shape"))
    registry.register(OpSpec(("Transpose",), _transpose, family="shape"))
