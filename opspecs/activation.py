"""Unary ops: every output element depends only on the same input element."""
from __future__ import annotations

from onnxprune.rules import IN, Barrier, NodeView, OpSpec, Side

from . import affine
from ._common import unary

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Mish", "Gelu", "Erf", "ThresholdedRelu", "Abs", "Neg", "Exp", "Log",
    "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Asin", "Acos",
    "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Not", "IsNaN", "IsInf",
    "Cast", "Shrink",
)


def _clip(view: NodeView, port, axes):
    """Clip's min/max (inputs 1, 2) are scalars; only data flows through."""
    if port.side == Side.IN and port.slot > 0:
        return Barrier("Clip bound pruned")
    return unary(view, port, axes)


def _cast_like(view: NodeView, port, axes):
    if port == IN(1):
        return []  # only the element type is read
    return unary(view, port, axes)


def register(registry) -> None:
    registry.register(OpSpec(UNARY, unary, family="activation"))
    registry.register(OpSpec(("Identity",), unary, passthrough=affine.identity, family="activation"))
    registry.register(OpSpec(("Dropout",), unary, passthrough=affine.dropout, family="activation"))
    registry.register(OpSpec(("Clip",), _clip, family="activation"))
    registry.register(OpSpec(("CastLike",), _cast_like, family="activation"))
