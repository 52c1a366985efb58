"""QuantizeLinear / DequantizeLinear (QDQ) and DynamicQuantizeLinear: elementwise with a scale and zero point.

``y = (x - zero_point) * scale`` (and the inverse) on every element: channels
pass through on any axis. A per-axis scale and zero point (1-D, along
``axis``) are sliced with that axis; per-tensor ones stay. Blocked
quantization (opset 21's ``block_size``: scales over blocks of ``axis``)
prunes along the other axes with its scales, and along ``axis`` in whole
blocks only (a channel shares its scale with its block, so the group's
channels are blocks); a partial last block is a barrier.

DynamicQuantizeLinear computes one scale and zero point from the tensor's
range at run time, and that range always includes 0: removing channels that
are zero leaves the scale, so it passes channels through exactly.

A constant quantized weight is scored on its dequantized values and masked by
setting its codes to the zero point (``stored``).
"""
from __future__ import annotations

import numpy as np

from onnxprune.mapping import Overlap
from onnxprune.rules import IN, OUT, QUANT_PARAM, Answer, Barrier, Couple, NodeView, OpSpec, Port, Side, Stored

from ._common import unknown_shape

QDQ = ("QuantizeLinear", "DequantizeLinear")


def _per_axis(view: NodeView) -> int | None:
    """The quantization axis of per-axis scales (normalized), or None for a per-tensor scale."""
    scale = view.shape(IN(1))
    if scale is None or len(scale) == 0 or (len(scale) == 1 and scale[0] == 1 and view.attr("block_size", 0) == 0):
        return None
    return int(view.attr("axis", 1)) % view.rank(IN(0))


def _blocked(view: NodeView, port: Port, axes: tuple[int, ...], params: list[Port]) -> Answer:
    """Scales (and zero points) of x's shape with ``axis`` divided into blocks of ``block_size``."""
    block, x, scale = int(view.attr("block_size")), view.shape(IN(0)), view.shape(IN(1))
    axis = int(view.attr("axis", 1)) % len(x)
    if len(scale) != len(x):
        return Barrier("blocked quantization with scales of another rank")
    if len(axes) != 1:
        return Barrier("blocked quantization prunes one axis at a time")
    a = axes[0]
    data = [p for p in (IN(0), OUT(0)) if p != port]
    if a != axis:
        return [Couple(p, axes) for p in data + params if p != port]
    if x[axis] % block:
        return Barrier(f"blocked quantization: the last block of axis {axis} is partial "
                       f"({x[axis]} is not a multiple of block_size {block}): blocks would shift")
    if port in params:  # a block of scales is block_size channels of x
        return [Couple(p, axes, Overlap(block, 1)) for p in data] + [Couple(p, axes) for p in params if p != port]
    return [Couple(p, axes) for p in data] + [Couple(p, axes, Overlap(1, block)) for p in params]


def quantize_linear(view: NodeView, port: Port, axes: tuple[int, ...]) -> Answer:
    if view.shape(IN(0)) is None:
        return unknown_shape(view, IN(0))
    scale = view.shape(IN(1))
    if scale is None:
        return unknown_shape(view, IN(1))
    params = [IN(s) for s in (1, 2) if view.has_input(s)]
    if view.attr("block_size", 0):
        return _blocked(view, port, axes, params)
    if len(scale) > 1:
        return Barrier("quantization scales of rank > 1 without block_size")
    axis = _per_axis(view)
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


def along(value: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """A 1-D per-axis parameter shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    shape = [1] * rank
    shape[axis] = -1
    return np.asarray(value).reshape(shape)


def codes(stored: np.ndarray, zero: np.ndarray, scale: np.ndarray | None) -> Stored:
    """A quantized constant read as ``(code - zero) * scale`` (``zero`` and ``scale`` broadcast to it)."""
    zero = np.broadcast_to(np.asarray(zero), stored.shape)
    real = stored.astype(np.float32) - zero.astype(np.float32)
    if scale is not None:
        real = real * np.asarray(scale, dtype=np.float32)
    return Stored(real.astype(np.float32), np.array(zero, dtype=stored.dtype))


def _dequantized(view: NodeView, slot: int) -> Stored | None:
    """DequantizeLinear's constant input: per tensor, per axis or per block."""
    x, scale = view.const(0), view.const(1)
    if view.node.op_type != "DequantizeLinear" or slot != 0 or x is None or scale is None:
        return None
    zero = view.const(2) if view.has_input(2) else np.zeros((), x.dtype)
    if zero is None:
        return None
    axis = int(view.attr("axis", 1)) % max(x.ndim, 1)
    block = int(view.attr("block_size", 0) or 0)
    if block:  # every block of ``axis`` shares one scale and zero point
        take = np.minimum(np.arange(x.shape[axis]) // block, scale.shape[axis] - 1)
        scale, zero = np.take(scale, take, axis=axis), np.take(zero, take, axis=axis) if zero.ndim else zero
    elif scale.ndim == 1 and scale.size > 1:
        scale = along(scale, axis, x.ndim)
        zero = along(zero, axis, x.ndim) if zero.size > 1 else zero.reshape(())
    return codes(x, zero, scale)


def dynamic_quantize_linear(view: NodeView, port: Port, axes: tuple[int, ...]) -> Answer:
    if port in (OUT(1), OUT(2)):
        return Barrier("DynamicQuantizeLinear's scale and zero point are one per tensor")
    return [Couple(p, axes) for p in (IN(0), OUT(0)) if p != port]


def register(registry) -> None:
    registry.register(OpSpec(QDQ, quantize_linear, since=10, param_roles={1: QUANT_PARAM, 2: QUANT_PARAM},
                             stored=_dequantized, family="quantize"))
    registry.register(OpSpec(("DynamicQuantizeLinear",), dynamic_quantize_linear, since=11, family="quantize"))
