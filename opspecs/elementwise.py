"""Broadcasting elementwise ops: all inputs share the output's channels."""
from __future__ import annotations

from onnxprune.rules import OpSpec

from ._common import broadcast

# the output is the sum of the inputs: a residual join, from which one addend can be dropped
SUMS = ("Add", "Sum")
ARITHMETIC = ("Sub", "Mul", "Max", "Min", "Mean", "PRelu", "Where",
              "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Mod")


def register(registry) -> None:
    registry.register(OpSpec(SUMS, broadcast, sum_of_inputs=True, family="elementwise"))
    registry.register(OpSpec(ARITHMETIC, broadcast, family="elementwise"))
    # a divisor or exponent of 1 leaves a channel unchanged, so masking uses 1, not 0
    registry.register(OpSpec(("Div", "Pow"), broadcast, neutral={1: 1.0}, family="elementwise"))
