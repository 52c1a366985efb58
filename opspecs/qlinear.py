"""Integer convolutions and matrix products: QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger.

They prune like Conv and MatMul (their rules are asked, on the same tensors
in Conv's and MatMul's input order), and the per-output-channel weight scale
and zero point (1-D, one per output channel / column) are sliced with the
output channels. Activation scales and zero points are one per tensor (or
per row, which no channel group touches) and stay.

Exactness: a removed input channel reads ``x_code - x_zero_point = 0`` in
the zeroed model (the producer's zeroed channel dequantizes to 0) and a
removed output channel computes 0 from codes at the weight's zero point, in
integer arithmetic; per-tensor output scales are fixed constants. So
removing equals zeroing exactly, with the integer rounding unchanged.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from onnxprune.rules import (IN, OUT, QUANT_PARAM, Barrier, Couple, Layer, LayerKind, NodeView, OpSpec, Port, Side,
                             Updates)

from . import conv, linear
from ._common import as_base_op
from .quantize import along, codes


@dataclasses.dataclass(frozen=True)
class Kind:
    """Where an integer op keeps what Conv / MatMul keep, and what describes its weight."""

    base: tuple[int, ...]  # the op's input slot for each input of the base op (Conv: x, W, B; MatMul: A, B)
    weight_scale: int | None  # per-output-channel weight scale slot (None: no scale input)
    weight_zero: int  # weight zero point slot
    activation_params: tuple[int, ...]  # per-tensor (or per-row) scales and zero points
    conv: bool

    @property
    def weight(self) -> int:
        return self.base[1]


KINDS = {
    "QLinearConv": Kind((0, 3, 8), 4, 5, (1, 2, 6, 7), True),
    "ConvInteger": Kind((0, 1), None, 3, (2,), True),
    "QLinearMatMul": Kind((0, 3), 4, 5, (1, 2, 6, 7), False),
    "MatMulInteger": Kind((0, 1), None, 3, (2,), False),
}


def _kind(view: NodeView) -> Kind:
    return KINDS[view.node.op_type]


def _base_view(view: NodeView, kind: Kind) -> NodeView:
    """The node as its float op would be written (Conv(x, W, B), MatMul(A, B)): the same tensors."""
    return as_base_op(view, kind.base)


def _weight_params(view: NodeView, kind: Kind) -> list[Port]:
    """The weight's scale and zero point where they are per output channel (1-D, more than one)."""
    slots = [s for s in (kind.weight_scale, kind.weight_zero) if s is not None and view.has_input(s)]
    ports = []
    for slot in slots:
        shape = view.shape(IN(slot))
        if shape is not None and len(shape) == 1 and shape[0] > 1:
            ports.append(IN(slot))
    return ports


def _out_axis(view: NodeView, kind: Kind) -> tuple[Port, tuple[int, ...]] | None:
    """The weight's output-channel axis, as a port and axes of the base op."""
    if kind.conv:
        return IN(1), (0,)
    rank = view.rank(IN(kind.weight))
    return (IN(1), (rank - 1,)) if rank else None


def couple(view: NodeView, port: Port, axes: tuple[int, ...]):
    kind = _kind(view)
    base = _base_view(view, kind)
    spec = conv._couple_conv if kind.conv else linear._couple_matmul
    params = _weight_params(view, kind)
    out_end = _out_axis(view, kind)
    if out_end is None:
        return Barrier("rank of the weight unknown")
    if port in params:
        if tuple(axes) != (0,):
            return Barrier(f"{port} is one value per output channel")
        base_port, base_axes = out_end
        answer = spec(base, base_port, base_axes)
        if isinstance(answer, Barrier):
            return answer
        return [Couple(IN(kind.weight), base_axes)] + _translate(kind, answer) + \
            [Couple(p, (0,)) for p in params if p != port]
    if port.side == Side.IN and port.slot not in kind.base:
        return Barrier(f"{view.node.op_type} input {port.slot} is a scale or zero point of a whole tensor (or row)")
    base_port = port if port.side == Side.OUT else IN(kind.base.index(port.slot))
    answer = spec(base, base_port, axes)
    if isinstance(answer, Barrier):
        return answer
    reaches_out = (base_port, tuple(axes)) == out_end or any(
        isinstance(c, Couple) and (c.port, tuple(c.axes)) == out_end for c in answer)
    if reaches_out:
        for slot in (kind.weight_scale, kind.weight_zero):
            shape = view.shape(IN(slot)) if slot is not None and view.has_input(slot) else ()
            if shape is None:
                return Barrier(f"shape of {view.tensor(IN(slot))} unknown")
            if int(np.prod(shape)) > 1 and IN(slot) not in params:
                return Barrier(f"weight scale or zero point {view.tensor(IN(slot))} of shape {list(shape)}: "
                               "neither one per tensor nor one per output channel")
    return _translate(kind, answer) + ([Couple(p, (0,)) for p in params] if reaches_out else [])


def _translate(kind: Kind, answer) -> list:
    """The base op's answer on this op's ports."""
    return [dataclasses.replace(c, port=IN(kind.base[c.port.slot])) if isinstance(c, Couple) and c.port.side == Side.IN
            else c for c in answer]


def _roots(view: NodeView):
    kind = _kind(view)
    if not view.from_constants(kind.weight):
        return []
    rank = view.rank(OUT(0))
    return [(OUT(0), (1 if kind.conv else rank - 1,))] if rank else []


def _rewrite(view: NodeView, changes):
    """Depthwise integer convs lose whole groups (as Conv); matrix products need nothing."""
    kind = _kind(view)
    if not kind.conv:
        return Updates()
    base_changes = {p if p.side == Side.OUT else IN(kind.base.index(p.slot)): c for p, c in changes.items()
                    if p.side == Side.OUT or p.slot in kind.base}
    return conv._rewrite_group(_base_view(view, kind), base_changes)


def _macs(view: NodeView) -> int:
    kind = _kind(view)
    base = _base_view(view, kind)
    return conv._macs_conv(base) if kind.conv else linear._macs_matmul(base)


def _layer(view: NodeView) -> Layer | None:
    kind = _kind(view)
    base = _base_view(view, kind)
    if kind.conv:
        return conv._layer(base)
    return Layer(LayerKind.GEMM) if view.from_constants(kind.weight) and not view.from_constants(0) else None


def _stored(view: NodeView, slot: int):
    """The weight's codes less its zero point (per tensor or per output channel), times its scale where the
    op has one (ConvInteger / MatMulInteger apply theirs afterwards, outside the op)."""
    kind = _kind(view)
    w = view.const(slot)
    if slot != kind.weight or w is None or w.ndim < 1:
        return None
    axis = 0 if kind.conv else w.ndim - 1
    zero = view.const(kind.weight_zero) if view.has_input(kind.weight_zero) else np.zeros((), w.dtype)
    scale = view.const(kind.weight_scale) if kind.weight_scale is not None else None
    if zero is None or (kind.weight_scale is not None and scale is None):
        return None
    zero = along(zero, axis, w.ndim) if zero.size > 1 else zero.reshape(())
    if scale is not None:
        scale = along(scale, axis, w.ndim) if scale.size > 1 else scale.reshape(())
    return codes(w, zero, scale)


def _weight_elements(view: NodeView, slot: int) -> int | None:
    """The weight's codes: one parameter each."""
    w = view.const(slot) if slot == _kind(view).weight else None
    return int(w.size) if w is not None else None


def register(registry) -> None:
    for op, kind in KINDS.items():
        roles = {s: QUANT_PARAM for s in (*kind.activation_params, kind.weight_scale, kind.weight_zero)
                 if s is not None}
        registry.register(OpSpec((op,), couple, since=10, roots=_roots, rewrite=_rewrite, macs=_macs,
                                 param_roles=roles, stored=_stored, weight_elements=_weight_elements, layer=_layer,
                                 family="qlinear"))
