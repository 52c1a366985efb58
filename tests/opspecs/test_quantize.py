"""QuantizeLinear / DequantizeLinear (opspecs/quantize.py): quantized weights (QDQ) prune with their layers.

Oracle: removing channels equals zeroing them in every coupled tensor: the
int8 weights, their per-axis scales and zero points, and the layers around.
"""
import numpy as np
import pytest

from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph


def _quantized(b: GraphBuilder, shape, axis, per_axis=True):
    """A weight stored as int8 + scale (+ zero point) and dequantized in the graph."""
    rng = np.random.default_rng(len(shape) * 7 + axis)
    q = b.const(rng.integers(-100, 100, size=shape).astype(np.int8), prefix="wq")
    n = shape[axis] if per_axis else 1
    scale = b.const((rng.uniform(0.002, 0.01, size=n) if per_axis else np.float32(0.005)).astype(np.float32),
                    prefix="scale")
    # per tensor: symmetric (zero point 0), as weights are quantized; zeroing an int8 weight is then
    # zeroing its value, which the oracle needs (a removed channel never reads its zero point)
    zero = b.const((rng.integers(-3, 3, size=n) if per_axis else np.int8(0)).astype(np.int8), prefix="zp")
    return b.op("DequantizeLinear", [q, scale, zero], axis=axis)


@pytest.mark.parametrize("per_axis", [True, False], ids=["per-channel", "per-tensor"])
def test_quantized_conv_weights_prune_with_their_scales(per_axis):
    b = GraphBuilder(opset=17, seed=1)
    x = b.input("x", [1, 3, 8, 8])
    y = b.op("Conv", [x, _quantized(b, [8, 3, 3, 3], 0, per_axis), b.param([8])], pads=[1, 1, 1, 1])
    y = b.op("Relu", [y])
    y = b.op("Conv", [y, _quantized(b, [6, 8, 3, 3], 0, per_axis), b.param([6])], pads=[1, 1, 1, 1])
    b.output(y)
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    assert any(len(g.channels) == 8 for g in dg.prunable_groups())


@pytest.mark.parametrize("per_axis", [True, False], ids=["per-column", "per-tensor"])
def test_quantized_matmul_weights_prune_like_an_mlp(per_axis):
    b = GraphBuilder(opset=17, seed=2)
    x = b.input("x", [2, 5, 16])
    h = b.op("Add", [b.op("MatMul", [x, _quantized(b, [16, 32], 1, per_axis)]), b.param([32])])
    h = b.op("Relu", [h])
    y = b.op("MatMul", [h, _quantized(b, [32, 16], 1, per_axis)])
    b.output(y)
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    assert any(len(g.channels) == 32 for g in dg.prunable_groups())


def test_quantized_activations_pass_channels_through():
    b = GraphBuilder(opset=17, seed=3)
    x = b.input("x", [1, 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 8)])
    scale, zero = b.const(np.float32(0.05), prefix="s"), b.const(np.uint8(128), prefix="z")
    y = b.op("DequantizeLinear", [b.op("QuantizeLinear", [y, scale, zero]), scale, zero])
    b.output(b.conv(y, 4))
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    assert any(len(g.channels) == 8 for g in dg.prunable_groups())


def test_blocked_quantization_is_a_barrier_with_its_reason():
    b = GraphBuilder(opset=21, seed=4)
    x = b.input("x", [2, 16])
    q = b.const(np.random.default_rng(0).integers(-8, 8, size=[16, 32]).astype(np.int8), prefix="wq")
    scale = b.const(np.full([2, 32], 0.01, np.float32), prefix="scale")
    w = b.op("DequantizeLinear", [q, scale], axis=0, block_size=8)
    b.output(b.op("MatMul", [b.op("Relu", [b.op("MatMul", [x, w])]), b.param([32, 4])]))
    dg = depgraph(b.build())
    assert any("blocked quantization" in g.describe() and not g.prunable for g in dg.groups)
