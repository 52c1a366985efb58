"""Unary ops: every output element depends only on the same input element."""
from __future__ import annotations

import numpy as np

from onnxprune.rules import IN, Barrier, NodeView, OpSpec, Side

from ._common import extra_outputs_read, unary

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Mish", "Gelu", "Erf", "ThresholdedRelu", "Abs", "Neg", "Exp", "Log",
    "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Asin", "Acos",
    "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Not", "IsNaN", "IsInf",
    "Cast", "Shrink",
)
# near the identity on half their range: UPDP-style pruning may replace them by it (OpSpec.removable_activation)
RELU_LIKE = ("Relu", "LeakyRelu", "Elu", "Celu", "Selu", "Gelu", "HardSwish", "Mish")


def _clip(view: NodeView, port, axes):
    """Clip's min/max (inputs 1, 2) are scalars; only data flows through."""
    if port.side == Side.IN and port.slot > 0:
        return Barrier("Clip bound pruned")
    return unary(view, port, axes)


def _cast_like(view: NodeView, port, axes):
    if port == IN(1):
        return []  # only the element type is read
    return unary(view, port, axes)


def _dropout(view: NodeView) -> Barrier | None:
    """Dropout passes its input through in inference: training_mode absent or a false constant,
    and nobody reads the mask."""
    if extra_outputs_read(view):
        return Barrier("its mask output is read")
    if view.has_input(2):
        mode = view.const(2)
        if mode is None:
            return Barrier("training_mode is not a constant")
        if bool(np.asarray(mode).reshape(-1)[0]):
            return Barrier("training_mode is on")
    if view.opset < 7 and not int(view.attr("is_test", 0)):
        return Barrier("is_test is off (training)")
    return None


def _identity(view: NodeView) -> Barrier | None:
    return None


def register(registry) -> None:
    registry.register(OpSpec(tuple(op for op in UNARY if op not in RELU_LIKE), unary, family="activation"))
    registry.register(OpSpec(RELU_LIKE, unary, removable_activation=True, family="activation"))
    registry.register(OpSpec(("Identity",), unary, passthrough=_identity, family="activation"))
    registry.register(OpSpec(("Dropout",), unary, passthrough=_dropout, family="activation"))
    registry.register(OpSpec(("Clip",), _clip, removable_activation=True, family="activation"))
    registry.register(OpSpec(("CastLike",), _cast_like, family="activation"))
