"""Building blocks shared by operator families: broadcasting, unary coupling, shapes."""
from __future__ import annotations

import numpy as np

from onnxprune.mapping import IDENTITY, Overlap
from onnxprune.rules import IN, OUT, Answer, Barrier, Couple, NodeView, Port, Side


def norm_axes(axes, rank: int) -> tuple[int, ...]:
    return tuple(int(a) % rank for a in axes)


def shapes_known(view: NodeView, *ports: Port) -> bool:
    return all(view.shape(p) is not None for p in ports)


def unknown_shape(view: NodeView, port: Port) -> Barrier:
    return Barrier(f"shape of {view.tensor(port)} unknown (pass --input-shape)")


def unary(view: NodeView, port: Port, axes: tuple[int, ...]) -> Answer:
    """Output has the input's shape and each element depends on the same input element."""
    others = [OUT(i) for i in range(view.n_outputs) if view.node.outputs[i]] + [IN(0)]
    return [Couple(p, axes) for p in others if p != port]


def broadcast(view: NodeView, port: Port, axes: tuple[int, ...], inputs: list[int] | None = None) -> Answer:
    """Elementwise op with numpy broadcasting over ``inputs`` (default: all inputs).

    From an input, couple the output; from the output, couple every input that
    really carries those axes (size-1 / missing axes are broadcast and untouched).
    Per-channel constants (a [C,1,1] bias) are inputs like any other and get sliced.
    """
    slots = inputs if inputs is not None else [i for i in range(view.n_inputs) if view.has_input(i)]
    out_shape = view.shape(OUT(0))
    if out_shape is None:
        return unknown_shape(view, OUT(0))
    rank = len(out_shape)
    if port.side == Side.IN:
        if port.slot not in slots:
            return Barrier(f"input {port.slot} is not elementwise")
        in_shape = view.shape(port)
        if in_shape is None:
            return unknown_shape(view, port)
        shift = rank - len(in_shape)
        out_axes = tuple(a + shift for a in axes)
        if any(in_shape[a] != out_shape[b] for a, b in zip(axes, out_axes)):
            return Barrier("broadcast input pruned along a broadcast axis")
        return [Couple(OUT(0), out_axes)]
    links = []
    for slot in slots:
        in_shape = view.shape(IN(slot))
        if in_shape is None:
            return unknown_shape(view, IN(slot))
        shift = rank - len(in_shape)
        in_axes = tuple(a - shift for a in axes)
        carried = [a >= 0 and in_shape[a] == out_shape[a + shift] and in_shape[a] != 1 for a in in_axes]
        if all(carried):
            links.append(Couple(IN(slot), in_axes))
        elif any(carried):
            return Barrier(f"input {slot} broadcasts along part of axes {axes}")
    return links


def reshape_links(shape_a, shape_b, axes: tuple[int, ...], port_b: Port) -> Answer:
    """Couple consecutive ``axes`` of a tensor to the axes of its reshaped view.

    Row-major order is preserved by reshape, so a run of axes maps to the run
    of target axes spanning the same flat range; when one side's run is coarser
    (Flatten: one channel = H*W features) the mapping is an :class:`Overlap`.
    """
    if list(axes) != list(range(axes[0], axes[-1] + 1)):
        return Barrier(f"axes {axes} are not consecutive")
    prefix = int(np.prod(shape_a[: axes[0]]))
    starts = [c for c in range(len(shape_b) + 1) if int(np.prod(shape_b[:c])) == prefix]
    if not starts:
        return Barrier("reshape does not keep these axes' leading extent")
    c = starts[-1]
    while c < len(shape_b) and shape_b[c] == 1 and c + 1 in starts:
        c += 1
    size_a = int(np.prod([shape_a[a] for a in axes]))
    # smallest aligned super-block covering the queried run on both sides
    total_a = prefix * size_a
    e, d = axes[-1] + 1, c
    pa, pb = total_a, prefix
    while True:
        while d < len(shape_b) and pb < pa:
            pb *= shape_b[d]
            d += 1
        if pa == pb:
            break
        if e >= len(shape_a):
            return Barrier("reshape boundaries do not align")
        pa *= shape_a[e]
        e += 1
    if d <= c:
        return Barrier("reshape maps these axes to nothing")
    super_size = pa // prefix
    # target run: the shortest leading part of [c, d) holding at least size_a elements
    end, size_b = c, 1
    while end < d and size_b < size_a:
        size_b *= shape_b[end]
        end += 1
    end = max(end, c + 1)
    size_b = int(np.prod(shape_b[c:end]))
    if super_size % size_a or super_size % size_b:
        return Barrier("reshape blocks are not nested")
    axes_b = tuple(range(c, end))
    block_a, block_b = super_size // size_a, super_size // size_b
    mapping = IDENTITY if block_a == block_b == 1 else Overlap(block_a, block_b)
    return [Couple(port_b, axes_b, mapping)]


def int_list(value) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]
