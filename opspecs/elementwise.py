"""Broadcasting elementwise ops: all inputs share the output's channels."""
from __future__ import annotations

from onnxprune.rules import OpSpec

from . import affine
from ._common import broadcast

ARITHMETIC = ("Max", "Min", "Mean", "PRelu", "Where",
              "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Mod")


def register(registry) -> None:
    registry.register(OpSpec(ARITHMETIC, broadcast, family="elementwise"))
    registry.register(OpSpec(("Add",), broadcast, affine=affine.add, sum_of_inputs=True, family="elementwise"))
    registry.register(OpSpec(("Sum",), broadcast, sum_of_inputs=True, family="elementwise"))
    registry.register(OpSpec(("Sub",), broadcast, affine=affine.sub, family="elementwise"))
    registry.register(OpSpec(("Mul",), broadcast, affine=affine.mul, family="elementwise"))
    # a divisor or exponent of 1 leaves a channel unchanged, so masking uses 1, not 0
    registry.register(OpSpec(("Div",), broadcast, neutral={1: 1.0}, affine=affine.div, family="elementwise"))
    registry.register(OpSpec(("Pow",), broadcast, neutral={1: 1.0}, family="elementwise"))
