"""Tiny models for engine, loader and CLI tests (8x8 inputs: each runs in milliseconds).

Node names come from GraphBuilder: the k-th node of an op type is ``<Op>_<k>``
(``Conv_0``, ``Conv_1``...), so tests can address layers by name.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from support.builder import GraphBuilder


def conv_chain(opset: int = 17, batch=1, seed: int = 0, bn: bool = True) -> onnx.ModelProto:
    """input[b,3,8,8] -> Conv_0(8) [-> BN] -> Relu -> Conv_1(6) -> Relu -> GAP -> Flatten -> Gemm(10)."""
    b = GraphBuilder(opset=opset, seed=seed, name="conv_chain")
    x = b.input("input", [batch, 3, 8, 8])
    y = b.conv(x, 8)
    if bn:
        y = b.bn(y)
    y = b.relu(b.conv(b.relu(y), 6))
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    b.output(b.rename(b.gemm(y, 10), "output"))
    return b.build()


def residual() -> onnx.ModelProto:
    """Conv_0 -> Relu_0 -> Conv_1 -> Relu_1 -> Conv_2 -> Add(Conv_2, Relu_0) -> Conv_3 -> output."""
    b = GraphBuilder(seed=1, name="residual")
    x = b.input("input", [1, 3, 8, 8])
    y = b.relu(b.conv(x, 8))
    z = b.conv(b.relu(b.conv(y, 4)), 8)
    s = b.op("Add", [z, y])
    b.output(b.rename(b.conv(s, 5, k=1), "output"))
    return b.build()


def repvgg_block(seed: int = 13, group: int = 1, identity_bn: bool = True, one_sum: bool = False) -> onnx.ModelProto:
    """conv -> relu -> RepVGG block (3x3+BN, 1x1+BN, BN or bare skip, summed by two Adds or, with
    ``one_sum``, one Sum of three) -> relu."""
    b = GraphBuilder(seed=seed)
    x = b.relu(b.conv(b.input("x", [2, 8, 8, 8]), 8))
    dense = b.bn(b.conv(x, 8, k=3, group=group, bias=False))
    point = b.bn(b.conv(x, 8, k=1, pad=0, group=group, bias=False))
    skip = b.bn(x) if identity_bn else x
    y = b.op("Sum", [skip, dense, point]) if one_sum else b.op("Add", [b.op("Add", [dense, point]), skip])
    b.output(b.rename(b.relu(y), "y"))
    return b.build()


def slice_halves(batch=1) -> onnx.ModelProto:
    """A torch-style runtime split: Shape -> Gather -> Div -> Mul -> Slice of a conv's output.

    Conv_0(8) is cut in halves at ``Shape(y)[1] / 2`` (and ends at ``half * 2``),
    the halves are concatenated in swapped order and feed Conv_1.
    """
    b = GraphBuilder(seed=2, name="slice_halves")
    x = b.input("input", [batch, 3, 8, 8])
    y = b.relu(b.conv(x, 8))
    channels = b.op("Gather", [b.op("Shape", [y]), b.const(np.array([1], np.int64))], axis=0)
    half = b.op("Div", [channels, b.const(np.array([2], np.int64))])
    end = b.op("Mul", [half, b.const(np.array([2], np.int64))])
    axis = b.const(np.array([1], np.int64))
    first = b.op("Slice", [y, b.const(np.array([0], np.int64)), half, axis])
    second = b.op("Slice", [y, half, end, axis])
    joined = b.op("Concat", [second, first], axis=1)
    w = b.param((4, 8, 1, 1), scale=0.35)  # inference cannot size `joined` without data propagation
    b.output(b.rename(b.op("Conv", [joined, w], kernel_shape=[1, 1]), "output"))
    return b.build()


def custom_domain() -> onnx.ModelProto:
    """A Conv followed by an op from a domain no runtime knows."""
    w = onnx.numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["y"], name="conv"),
             helper.make_node("FancyOp", ["y"], ["output"], name="fancy", domain="com.example.custom")]
    graph = helper.make_graph(
        nodes, "custom",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example.custom", 1)])
    model.ir_version = 8
    return model


def with_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """A copy of ``model`` that claims another default-domain opset (nodes unchanged)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for opset in out.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = version
    return out


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def wide_cnn() -> onnx.ModelProto:
    """Inverted residual blocks with widths of 32-240 (all but one multiples of 16; 40): enough layers
    that size targets land within tolerance on a width grid of 8."""
    b = GraphBuilder(seed=5)
    x = b.relu(b.conv(b.input("input", [1, 3, 8, 8]), 32))
    for hidden, out in ((96, 40), (144, 48), (192, 64), (240, 80)):
        x = b.relu(b.conv(x, hidden, k=1))
        x = b.relu(b.conv(x, hidden, k=3, group=hidden))
        x = b.conv(x, out, k=1)
    x = b.relu(b.conv(x, 128))
    b.output(b.rename(b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1), 10), "output"))
    return b.build()
