"""onnxruntime's quantized elementwise, pooling and concatenation ops (domain com.microsoft), as its static
quantizer writes them in the QOperator format: QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu,
QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat.

Each computes its float op on dequantized inputs and re-quantizes the result with one scale and zero point
per tensor, so the channel mapping is the float op's on the data inputs (asked of that op's rule, on the same
tensors), and the scales and zero points, one per tensor, stay. Exactness: a removed channel reads
``code = zero point`` (dequantizes to 0) in the zeroed model; Add, Mul, pooling and concatenation of zeros give
0, which re-quantizes to the output's zero point: removing equals zeroing, channel for channel. Sigmoid and
LeakyRelu map 0 to sigmoid(0) and 0 as their float ops do.
"""
from __future__ import annotations

import dataclasses

from onnxprune.rules import IN, OUT, QUANT_PARAM, Barrier, Couple, NodeView, OpSpec, Port, Side

from . import pooling
from ._common import as_base_op, broadcast, unary
from .concat_split import _concat

MS = "com.microsoft"
MAX_PIECES = 256  # QLinearConcat inputs whose scale / zero point roles are declared


def _on_data(slots_of, rule):
    """``rule`` asked on the float op's view; its answer's input ports translated back to this op's slots."""

    def couple(view: NodeView, port: Port, axes):
        slots = slots_of(view)
        if port.side == Side.IN and port.slot not in slots:
            return Barrier(f"{view.node.op_type} input {port.slot} is a scale or zero point of a whole tensor")
        base_port = port if port.side == Side.OUT else IN(slots.index(port.slot))
        answer = rule(as_base_op(view, slots), base_port, tuple(axes))
        if isinstance(answer, Barrier):
            return answer
        return [dataclasses.replace(c, port=IN(slots[c.port.slot]))
                if isinstance(c, Couple) and c.port.side == Side.IN else c for c in answer]

    return couple


def _binary(view: NodeView) -> list[int]:
    return [0, 3]  # A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point


def _single(view: NodeView) -> list[int]:
    return [0]  # X, X_scale, X_zero_point, Y_scale, Y_zero_point


def _concat_pieces(view: NodeView) -> list[int]:
    return list(range(2, view.n_inputs, 3))  # Y_scale, Y_zero_point, then (X, scale, zero point) per piece


def _global_pool(view: NodeView, port: Port, axes):
    """channels_last=1 keeps the channels on the last axis (and batch first); only those two pass."""
    if not view.attr("channels_last", 0):
        return pooling._pool(view, port, axes)
    rank = view.rank(IN(0))
    if rank is None:
        return Barrier("rank unknown")
    if any(a not in (0, rank - 1) for a in axes):
        return Barrier("spatial axes are pooled")
    return [Couple(OUT(0) if port == IN(0) else IN(0), axes)]


def _roles(n_inputs: int, data: list[int]) -> dict[int, str]:
    return {s: QUANT_PARAM for s in range(n_inputs) if s not in data}


def register(registry) -> None:
    binary = _on_data(_binary, lambda view, port, axes: broadcast(view, port, axes))
    registry.register(OpSpec(("QLinearAdd", "QLinearMul"), binary, domain=MS, param_roles=_roles(8, [0, 3]),
                             family="qlinear_contrib"))
    registry.register(OpSpec(("QLinearSigmoid", "QLinearLeakyRelu"), _on_data(_single, unary), domain=MS,
                             param_roles=_roles(5, [0]), family="qlinear_contrib"))
    registry.register(OpSpec(("QLinearGlobalAveragePool",), _on_data(_single, _global_pool), domain=MS,
                             param_roles=_roles(5, [0]), family="qlinear_contrib"))
    registry.register(OpSpec(("QLinearAveragePool",), _on_data(_single, pooling._pool), domain=MS,
                             param_roles=_roles(5, [0]), family="qlinear_contrib"))
    concat_params = {0: QUANT_PARAM, 1: QUANT_PARAM} | {s: QUANT_PARAM for i in range(MAX_PIECES)
                                                      for s in (3 + 3 * i, 4 + 3 * i)}
    registry.register(OpSpec(("QLinearConcat",), _on_data(_concat_pieces, _concat), domain=MS,
                             param_roles=concat_params, family="qlinear_contrib"))
