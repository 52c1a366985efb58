"""Small models of one layer kind at a given width, timed to measure the width grid.

Each model puts the width where a pruned group's channels sit in a network:
the output of one layer of the kind and the input of the next. The engine
(``onnxprune.widthgrid``) times them; only this module knows which operators
make up a kind.
"""
from __future__ import annotations

import numpy as np

from onnxprune.ir import Graph, ModelMeta, Node, Value
from onnxprune.rules import LayerKind

FLOAT = 1  # TensorProto.FLOAT
BASE = 64  # channels on the fixed side of a pair of layers
GROUPS = 4  # groups of the grouped-conv bench (its width counts per group)


class _Builder:
    def __init__(self, shape: list[int]):
        self.rng = np.random.default_rng(0)
        self.nodes: list[Node] = []
        self.params: dict[str, np.ndarray] = {}
        self.input = Value("x", FLOAT, tuple(shape))
        self.values = {"x": self.input}
        self.last = "x"

    def _weight(self, shape) -> str:
        name = f"w{len(self.params)}"
        fan_in = int(np.prod(shape[1:])) if len(shape) > 2 else shape[0]
        self.params[name] = (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        return name

    def conv(self, c_in: int, c_out: int, k: int, groups: int = 1) -> "_Builder":
        w = self._weight((c_out, c_in // groups, k, k))
        out = f"y{len(self.nodes)}"
        self.nodes.append(Node(f"n{len(self.nodes)}", "Conv", "", [self.last, w], [out],
                               {"kernel_shape": [k, k], "pads": [k // 2] * 4, "group": groups}))
        return self._to(out, c_out)

    def matmul(self, c_in: int, c_out: int) -> "_Builder":
        w = self._weight((c_in, c_out))
        out = f"y{len(self.nodes)}"
        self.nodes.append(Node(f"n{len(self.nodes)}", "MatMul", "", [self.last, w], [out]))
        return self._to(out, c_out, axis=-1)

    def _to(self, out: str, channels: int, axis: int = 1) -> "_Builder":
        """The new last tensor: the previous one's shape with ``channels`` on ``axis``."""
        shape = list(self.values[self.last].shape)
        shape[axis] = channels
        self.values[out] = Value(out, FLOAT, tuple(shape))
        self.last = out
        return self

    def graph(self) -> Graph:
        return Graph(self.nodes, [self.input], [self.values[self.last]], self.params, dict(self.values), {},
                     ModelMeta(ir_version=8, opsets={"": 17}))


def depthwise(width: int) -> Graph:
    return _Builder([1, width, 28, 28]).conv(width, width, 3, width).conv(width, width, 3, width).graph()


def grouped(width: int) -> Graph:
    c = GROUPS * width
    return _Builder([1, c, 14, 14]).conv(c, c, 3, GROUPS).conv(c, c, 3, GROUPS).graph()


def conv1x1(width: int) -> Graph:
    return _Builder([1, BASE, 28, 28]).conv(BASE, width, 1).conv(width, BASE, 1).graph()


def conv(width: int) -> Graph:
    return _Builder([1, BASE, 14, 14]).conv(BASE, width, 3).conv(width, BASE, 3).graph()


def gemm(width: int) -> Graph:
    return _Builder([128, 4 * BASE]).matmul(4 * BASE, width).matmul(width, 4 * BASE).graph()


BENCHES = {LayerKind.DEPTHWISE: depthwise, LayerKind.GROUPED: grouped, LayerKind.CONV1X1: conv1x1,
           LayerKind.CONV: conv, LayerKind.GEMM: gemm}


def register(registry) -> None:
    for kind, bench in BENCHES.items():
        registry.register_layer_bench(kind, bench)
