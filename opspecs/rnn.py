"""LSTM, GRU and RNN: one hidden unit is a row in every gate block, a column of R, a state slot.

Pruning hidden unit j removes, in each direction, rows ``g*H + j`` of W and R
for every gate block g (LSTM iofc, GRU zrh, RNN one), the matching entries
of both bias halves in B and of the peepholes P, column j of R, slot j of
initial_h / initial_c and of Y / Y_h / Y_c; ``hidden_size`` shrinks. Both
directions lose unit j together (hidden_size is one attribute). Ends that
span the directions and the hidden axis (``[dirs, H]`` flattened, as a
Transpose + Reshape to ``[seq, batch, dirs*H]`` reads Y) map each flat
index to its unit with ``Modulo(H)``.

Exactness: a unit whose W, R, B (and P) rows are zero and whose initial
states are zero outputs exactly 0 at every step (LSTM: c stays 0 since the
cell candidate is tanh(0); GRU: h' = z*h + (1-z)*tanh(0) stays 0 from 0;
RNN: tanh(0) = 0), so removing it equals zeroing it (neutral value 0).
Zero initial states computed at run time (torch exports build them with
ConstantOfShape) are dropped from the pruned node: an omitted state is zero.

Input-size pruning follows the producer: X's feature axis couples W's columns.
Sequence and batch axes never prune.

com.microsoft DynamicQuantizeLSTM is an LSTM with int8 W and R stored transposed
(``[dirs, input, 4H]``, ``[dirs, H, 4H]``) and their scales and zero points one per
direction (untouched) or one per gate row (``[dirs, 4H]``: sliced with the units). It
quantizes X and the hidden state at run time over a range that always holds 0, so
zeroed units and input features leave its scales as they are: removing them is exact.
"""
from __future__ import annotations

import numpy as np

from onnxprune.mapping import IDENTITY, Mapping, Modulo, compose
from onnxprune.onnx_in import attribute_array
from onnxprune.rules import IN, OUT, QUANT_PARAM, Barrier, Couple, NodeView, OpSpec, Port, Updates

from .quantize import codes

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1, "DynamicQuantizeLSTM": 4}
X, W, R, B, SEQ_LENS, INIT_H, INIT_C, P = (IN(i) for i in range(8))
# DynamicQuantizeLSTM: W scale, W zero point, R scale, R zero point
QUANT = {W: (IN(8), IN(9)), R: (IN(10), IN(11))}


def _transposed(view: NodeView) -> bool:
    """W and R stored [dirs, input or H, gates * H] (DynamicQuantizeLSTM) instead of [dirs, gates * H, ...]."""
    return view.node.op_type == "DynamicQuantizeLSTM"


def _gate_axis(view: NodeView) -> int:
    """The axis of W and R holding the gate rows."""
    return 2 if _transposed(view) else 1


def _other_axis(view: NodeView) -> int:
    """W's input features and R's hidden units (the axis that is not the gate rows)."""
    return 1 if _transposed(view) else 2


def _gate_params(view: NodeView) -> list[Port]:
    """Per-gate-row quantization parameters ([dirs, gates * H]); per-direction ones ([dirs]) stay."""
    if not _transposed(view):
        return []
    ports = []
    for pair in QUANT.values():
        for port in pair:
            shape = view.shape(port) if view.has_input(port.slot) else None
            if shape is not None and len(shape) == 2:
                ports.append(port)
    return ports
Y, Y_H, Y_C = OUT(0), OUT(1), OUT(2)
# ops a zero-filled state passes through unchanged in value (torch slices one per layer)
_ZERO_PRESERVING = ("Slice", "Squeeze", "Unsqueeze", "Reshape", "Expand", "Identity", "Transpose", "Cast", "Tile")


def _hidden(view: NodeView) -> int:
    return int(view.attr("hidden_size"))


def _dirs(view: NodeView) -> int:
    return 2 if view.attr("direction", "forward") == "bidirectional" else 1


def _state_axes(view: NodeView, port: Port) -> tuple[int | None, int]:
    """(directions axis, hidden axis) of Y, Y_h, Y_c, initial_h, initial_c for the node's layout."""
    layout = int(view.attr("layout", 0))
    if port == Y:
        return (2 if layout else 1), 3
    return (1 if layout else 0), 2


def _state_ports(view: NodeView) -> list[Port]:
    ports = [p for p in (Y, Y_H, Y_C) if view.tensor(p)]
    ports += [p for p in (INIT_H, INIT_C) if view.tensor(p) and not is_zeros(view, view.tensor(p))]
    return ports


def _canonical(view: NodeView, port: Port) -> tuple[int, ...]:
    """An output state is linked along (dirs, hidden) when bidirectional (what a Transpose +
    Reshape to [.., dirs*H] reads), else along hidden alone; a constant initial state along hidden."""
    dirs_axis, hidden_axis = _state_axes(view, port)
    if _dirs(view) > 1 and port in (Y, Y_H, Y_C):
        return tuple(sorted((dirs_axis, hidden_axis)))
    return (hidden_axis,)


def _to_unit(view: NodeView, port: Port, axes: tuple[int, ...]) -> Mapping | None:
    """Mapping from an end of ``port`` along ``axes`` to the hidden units, or None if it is not one."""
    hidden = _hidden(view)
    if port in (W, R):
        if axes == (_gate_axis(view),):
            return Modulo(hidden)  # gate blocks of H rows each
        if port == R and axes == (_other_axis(view),):
            return IDENTITY
        return None
    if port in [B, P] + _gate_params(view):
        return Modulo(hidden) if axes == (1,) else None  # gate blocks (and B's two halves) of H rows each
    dirs_axis, hidden_axis = _state_axes(view, port)
    if axes == (hidden_axis,):
        return IDENTITY
    if tuple(sorted(axes)) == tuple(sorted((dirs_axis, hidden_axis))) and dirs_axis < hidden_axis:
        return Modulo(hidden)  # flat index d*H + j
    return None


def _links_from_unit(view: NodeView, unit: Mapping, skip: tuple[Port, tuple[int, ...]]) -> list[Couple]:
    hidden = _hidden(view)
    gate, other = _gate_axis(view), _other_axis(view)
    targets = [(W, (gate,)), (R, (gate,)), (R, (other,))]
    targets += [(p, (1,)) for p in (B, P) if view.has_input(p.slot)] + [(p, (1,)) for p in _gate_params(view)]
    targets += [(p, _canonical(view, p)) for p in _state_ports(view)]
    links = []
    for port, axes in targets:
        if (port, axes) == skip:
            continue
        links.append(Couple(port, axes, compose(unit, _to_unit(view, port, axes).inverse(), hidden)))
    return links


def couple(view: NodeView, port: Port, axes: tuple[int, ...]):
    if view.node.op_type not in GATES:
        return Barrier(f"unknown recurrent op {view.node.op_type}")
    if port in (SEQ_LENS,):
        return Barrier("sequence lengths are not channels")
    x_rank = view.rank(X)
    feature_axis = (x_rank - 1) if x_rank else 2
    if port == X:
        return [Couple(W, (_other_axis(view),))] if axes == (feature_axis,) else \
            Barrier(f"X axes {axes} are time or batch")
    if port == W and axes == (_other_axis(view),):
        return [Couple(X, (feature_axis,))]
    if port in (p for pair in QUANT.values() for p in pair) and _transposed(view) and port not in _gate_params(view):
        return Barrier("a quantization scale or zero point of a whole direction")
    if port in (INIT_H, INIT_C) and is_zeros(view, view.tensor(port)):
        return []  # dropped from the pruned node (see rewrite)
    unit = _to_unit(view, port, tuple(axes))
    if unit is None:
        return Barrier(f"{port} axes {axes} are not the hidden axis (time, batch or direction)")
    return _links_from_unit(view, unit, (port, tuple(axes)))


def roots(view: NodeView):
    """Hidden units, and the input features (W's columns) so an embedding or input layer shrinks too."""
    if view.const(1) is None or view.const(2) is None:
        return []
    return [(p, _canonical(view, p)) for p in (Y, Y_H, Y_C) if view.tensor(p)][:1] + [(W, (_other_axis(view),))]


def rewrite(view: NodeView, changes) -> Updates:
    hidden = changes[R].new_size(_other_axis(view)) if R in changes else None
    if hidden is None:
        hidden = next((changes[p].new_size(_state_axes(view, p)[1]) for p in (Y, Y_H, Y_C) if p in changes), None)
    if hidden is None or hidden == _hidden(view):
        return Updates()
    drop = [p.slot for p in (INIT_H, INIT_C) if view.tensor(p) and is_zeros(view, view.tensor(p))]
    return Updates(attrs={"hidden_size": int(hidden)}, drop_inputs=tuple(drop))


def is_zeros(view: NodeView, tensor: str) -> bool:
    """The tensor is all zeros by construction (a zero ConstantOfShape, maybe sliced or reshaped)."""
    graph = view.graph
    for _ in range(8):
        if tensor in graph.params:
            return not np.any(graph.params[tensor])
        producer = graph.producers.get(tensor)
        if producer is None:
            return False
        node = producer[0]
        if node.op_type == "ConstantOfShape" and node.domain == "":
            value = node.attrs.get("value")
            fill = attribute_array(value) if value is not None else None
            return value is None or (fill is not None and not np.any(fill))
        if node.op_type not in _ZERO_PRESERVING or node.domain != "":
            return False
        tensor = node.inputs[0]
    return False


def _macs(view: NodeView) -> int:
    """Every step and batch row multiplies by W and R (both directions, all gates)."""
    x, w, r = view.shape(X), view.shape(W), view.shape(R)
    if x is None or w is None or r is None:
        return 0
    return int(x[0] * x[1] * (int(np.prod(w)) + int(np.prod(r))))


def _weight_elements(view: NodeView, slot: int) -> int | None:
    """DynamicQuantizeLSTM's W and R codes: one parameter each."""
    value = view.const(slot) if IN(slot) in QUANT else None
    return int(value.size) if value is not None else None


def _stored(view: NodeView, slot: int):
    """DynamicQuantizeLSTM's W and R: int8 codes less their zero point, times their scale (per direction or
    per gate row, along the last axis)."""
    port = IN(slot)
    if not _transposed(view) or port not in QUANT:
        return None
    value, (scale_port, zero_port) = view.const(slot), QUANT[port]
    scale = view.const(scale_port.slot)
    zero = view.const(zero_port.slot) if view.has_input(zero_port.slot) else np.zeros_like(scale, dtype=np.int8)
    if value is None or value.ndim != 3 or scale is None or zero is None or scale.shape != zero.shape:
        return None
    shape = (scale.shape[0], 1, -1) if scale.ndim == 2 else (-1, 1, 1)
    return codes(value, zero.reshape(shape), scale.reshape(shape))


def register(registry) -> None:
    registry.register(OpSpec(("LSTM", "GRU", "RNN"), couple, roots=roots, rewrite=rewrite, macs=_macs, family="rnn"))
    registry.register(OpSpec(("DynamicQuantizeLSTM",), couple, domain="com.microsoft", roots=roots, rewrite=rewrite,
                             macs=_macs, param_roles={s: QUANT_PARAM for s in range(8, 12)}, stored=_stored,
                             weight_elements=_weight_elements, family="rnn"))
