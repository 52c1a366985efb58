"""Broadcasting elementwise ops: all inputs share the output's channels."""
from __future__ import annotations

from onnxprune.rules import OpSpec

from ._common import broadcast

ARITHMETIC = ("Add", "Sub", "Mul", "Sum", "Max", "Min", "Mean", "PRelu", "Where",
              "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Mod")


def register(registry) -> None:
    registry.register(OpSpec(ARITHMETIC, broadcast, family="elementwise"))
    # a divisor or exponent of 1 leaves a channel unchanged, so masking uses 1, not 0
    registry.register(OpSpec(("Div", "Pow"), broadcast, neutral={1: 1.0}, family="elementwise"))
