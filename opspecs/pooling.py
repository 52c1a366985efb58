"""Pooling: batch and channel axes pass through; spatial axes are pooled."""
from __future__ import annotations

from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec

POOLS = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")


def _pool(view: NodeView, port, axes):
    if view.n_outputs > 1 and view.node.outputs[1]:
        return Barrier("MaxPool indices encode channel offsets")
    if any(a > 1 for a in axes):
        return Barrier("spatial axes are pooled")
    return [Couple(OUT(0) if port == IN(0) else IN(0), axes)]


def register(registry) -> None:
    registry.register(OpSpec(POOLS, _pool, family="pooling"))
