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


def _blocked_mlp(k: int, block: int):
    """x [2, 16] -> MatMul by a weight [16, k] quantized in blocks of ``block`` rows of K -> Relu -> MatMul [k, 4]
    (the next layer's K blocked too) -> output."""
    b = GraphBuilder(opset=21, seed=4)
    rng = np.random.default_rng(0)
    x = b.input("x", [2, 16])

    def blocked(rows, cols):
        q = b.const(rng.integers(-8, 8, size=[rows, cols]).astype(np.int8), prefix="wq")
        n = -(-rows // block)
        scale = b.const(rng.uniform(0.01, 0.05, size=[n, cols]).astype(np.float32), prefix="scale")
        zero = b.const(rng.integers(-2, 2, size=[n, cols]).astype(np.int8), prefix="zp")
        return b.op("DequantizeLinear", [q, scale, zero], axis=0, block_size=block)

    h = b.op("Relu", [b.op("MatMul", [x, blocked(16, k)])])
    b.output(b.op("MatMul", [h, blocked(k, 4)]))
    return b.build()


def test_blocked_quantization_prunes_whole_blocks_and_its_columns():
    """Columns of a K-blocked weight prune with their scales; the next layer's K (its blocked axis) only in whole
    blocks: the group's channels are blocks of 8 of the hidden layer's 32 channels."""
    dg = assert_all_groups_oracle(_blocked_mlp(32, 8), min_groups=1)
    hidden = [g for g in dg.prunable_groups() if any(e.tensor.startswith("wq") and e.axes == (1,) for e in g.ends)]
    assert [g.size for g in hidden] == [4]
    assert all(len(idx) == 8 for ch in hidden[0].channels for e, idx in ch.items() if e.axes == (1,) and
               e.tensor.startswith("wq"))


def test_blocked_quantization_with_a_partial_last_block_is_a_barrier_with_its_reason():
    dg = depgraph(_blocked_mlp(28, 8))  # 28 = 3 blocks of 8 and one of 4
    assert not dg.prunable_groups()
    assert any("last block of axis 0 is partial" in g.describe() for g in dg.groups)


def test_dequantized_values_rank_channels_not_codes():
    """Per-channel scales decide importance: small codes with a large scale outweigh large codes with a tiny one."""
    from onnxprune.importance import l1
    from onnxprune.scoring import ScoringContext
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", [1, 4])
    q = b.const(np.array([[100, 1, 50, 2]] * 4, np.int8), prefix="wq")
    scale = b.const(np.array([1e-4, 1.0, 1e-3, 1.0], np.float32), prefix="scale")
    zero = b.const(np.zeros(4, np.int8), prefix="zp")
    h = b.op("Relu", [b.op("MatMul", [x, b.op("DequantizeLinear", [q, scale, zero], axis=1)])])
    b.output(b.op("MatMul", [h, b.const(np.ones([4, 3], np.float32), prefix="w2")]))  # reads every channel alike
    dg = depgraph(b.build())
    group = dg.prunable_groups()[0]
    score = l1(ScoringContext(dg, np.random.default_rng(0)), group)
    assert list(np.argsort(score)[:2]) == [0, 2]  # codes 100 and 50 at scales 1e-4 and 1e-3 go first


def test_asymmetric_per_tensor_weights_mask_to_their_zero_point():
    """uint8 codes around a per-tensor zero point of 128: the oracle masks a channel by writing 128 (zero after
    dequantization), so removing it is exact although the zero point and scale stay."""
    b = GraphBuilder(opset=17, seed=6)
    rng = np.random.default_rng(6)
    x = b.input("x", [1, 3, 8, 8])

    def weight(shape):
        q = b.const(rng.integers(0, 256, size=shape).astype(np.uint8), prefix="wq")
        return b.op("DequantizeLinear", [q, b.const(np.float32(0.004), prefix="s"), b.const(np.uint8(128), prefix="z")])

    y = b.op("Relu", [b.op("Conv", [x, weight([8, 3, 3, 3]), b.param([8])], pads=[1, 1, 1, 1])])
    b.output(b.op("Conv", [y, weight([4, 8, 1, 1])]))
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    assert [g.size for g in dg.prunable_groups()] == [8]


def test_int4_blocked_weights_prune_in_whole_blocks():
    """LLM-style int4 QDQ (opset 21: INT4 codes and zero points, blocks of 16 along K): the hidden 64 columns
    prune with their scales, in blocks of 16 (the next weight's K blocks)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(7)

    def blocked(name, k, n, block):
        codes = helper.make_tensor(f"{name}_q", TensorProto.INT4, [k, n], rng.integers(-8, 8, size=k * n).tolist())
        scale = numpy_helper.from_array(rng.uniform(0.01, 0.05, size=(k // block, n)).astype(np.float32), f"{name}_s")
        zero = helper.make_tensor(f"{name}_z", TensorProto.INT4, [k // block, n],
                                  rng.integers(-2, 2, size=k // block * n).tolist())
        node = helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name], name=name,
                                axis=0, block_size=block)
        return node, [codes, scale, zero]

    (n1, i1), (n2, i2) = blocked("w1", 32, 64, 16), blocked("w2", 64, 8, 16)
    nodes = [n1, n2, helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "int4", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], i1 + i2)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    dg = assert_all_groups_oracle(model, min_groups=1)
    assert [g.size for g in dg.prunable_groups()] == [4]


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_weights_quantized_in_the_graph_score_and_prune(opset):
    """onnxruntime's quantizer, on an opset-11 model whose weights are Constant nodes (the real PaddleOCR
    direction classifier), leaves each float weight in place and quantizes it in the graph: QuantizeLinear then
    DequantizeLinear-10, which onnx's reference evaluator has no kernel for. Scoring evaluates that chain
    through onnxruntime instead (it was an internal error)."""
    from onnxprune import Pruner
    b = GraphBuilder(opset=opset, seed=7)
    rng = np.random.default_rng(7)
    x = b.input("x", [1, 3, 8, 8])

    def weight(shape):
        w = b.const((0.2 * rng.standard_normal(shape)).astype(np.float32), prefix="w")
        scale, zero = b.const(np.float32(0.004), prefix="s"), b.const(np.uint8(128), prefix="z")
        return b.op("DequantizeLinear", [b.op("QuantizeLinear", [w, scale, zero]), scale, zero])

    y = b.op("Relu", [b.op("Conv", [x, weight([8, 3, 3, 3]), b.param([8])], pads=[1, 1, 1, 1])])
    b.output(b.op("Conv", [y, weight([4, 8, 1, 1])]))
    model = b.build()
    pruner = Pruner.from_model(model)
    pruner.prune(ratio=0.5)
    weights = [t for t in pruner.to_model().graph.initializer if len(t.dims) == 4]
    assert sorted(tuple(t.dims) for t in weights) == [(4, 3, 3, 3), (4, 4, 1, 1)]
    assert_all_groups_oracle(model, min_groups=1)
