"""QuantizeLinear / DequantizeLinear: elementwise with a scale and zero point per tensor or per axis.

``y = (x - zero_point) * scale`` (and the inverse) on every element: channels
pass through on any axis. A per-axis scale and zero point (1-D, along
``axis``) are sliced with that axis; per-tensor ones stay. Blocked
quantization (opset 21's ``block_size``: scales over blocks of an axis) is a
barrier: a channel there shares its scale with its block.
"""
from __future__ import annotations

from onnxprune.rules import IN, OUT, Answer, Barrier, Couple, NodeView, OpSpec, Port, Side

from ._common import unknown_shape

QDQ = ("QuantizeLinear", "DequantizeLinear")


def _per_axis(view: NodeView) -> int | None:
    """The quantization axis of per-axis scales (normalized), or None for a per-tensor scale."""
    scale = view.shape(IN(1))
    if scale is None or len(scale) == 0 or (len(scale) == 1 and scale[0] == 1 and view.attr("block_size", 0) == 0):
        return None
    return int(view.attr("axis", 1)) % view.rank(IN(0))


def quantize_linear(view: NodeView, port: Port, axes: tuple[int, ...]) -> Answer:
    if view.shape(IN(0)) is None:
        return unknown_shape(view, IN(0))
    scale = view.shape(IN(1))
    if scale is None:
        return unknown_shape(view, IN(1))
    if view.attr("block_size", 0) or len(scale) > 1:
        return Barrier("blocked quantization: channels share scales within a block")
    axis = _per_axis(view)
    params = [IN(s) for s in (1, 2) if view.has_input(s)]
    if port.side == Side.IN and port.slot > 0:  # a per-axis scale or zero point: its one axis is ``axis``
        if axis is None:
            return Barrier("per-tensor scale pruned")
        data_axes = (axis,)
        answer = [Couple(IN(0), data_axes), Couple(OUT(0), data_axes)]
        return answer + [Couple(p, (0,)) for p in params if p != port]
    answer = [Couple(p, axes) for p in (IN(0), OUT(0)) if p != port]
    if axis is not None and axis in axes:
        answer += [Couple(p, (0,)) for p in params]
    return answer


def register(registry) -> None:
    registry.register(OpSpec(QDQ, quantize_linear, since=10, family="quantize"))
