"""com.microsoft MatMulNBits (opspecs/nbits.py): columns prune with their scales and zero points, K in whole
blocks (packed zero points re-packed), partial blocks and act-order g_idx are barriers.

Oracle: onnxruntime's MatMulNBits kernel on the pruned model equals it on the original with the channels'
codes set to their zero point (dequantized 0), and equals numpy's dequantized product.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from support import nbits
from support.oracle import assert_all_groups_oracle, depgraph, random_feeds, run

OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]


def _mlp(k_in=48, hidden=64, out=24, block=16, bits=4, zero_points=True, seed=0):
    """x [2, 5, k_in] -> MatMulNBits (+bias) -> Relu -> MatMulNBits -> y [2, 5, out]."""
    rng = np.random.default_rng(seed)
    n1, i1 = nbits.layer("fc1", "x", rng.standard_normal((k_in, hidden)).astype(np.float32) * 0.3, block, bits,
                         zero_points, bias=0.1 * rng.standard_normal(hidden))
    n2, i2 = nbits.layer("fc2", "h", rng.standard_normal((hidden, out)).astype(np.float32) * 0.3, block, bits,
                         zero_points)
    nodes = [n1, helper.make_node("Relu", ["fc1"], ["h"], name="relu"), n2]
    graph = helper.make_graph(nodes, "nbits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, k_in])],
                              [helper.make_tensor_value_info("fc2", TensorProto.FLOAT, [2, 5, out])], i1 + i2)
    model = helper.make_model(graph, opset_imports=OPSETS)
    model.ir_version = 8
    return model


def test_packing_matches_onnxruntime():
    """The test's own packing (support/nbits.py) is the layout onnxruntime reads: its output is x @ dequantized W."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((48, 8)).astype(np.float32)
    node, inits = nbits.layer("y", "x", w, 16)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 48])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 8])], inits)
    model = helper.make_model(graph, opset_imports=OPSETS)
    x = rng.standard_normal((3, 48)).astype(np.float32)
    np.testing.assert_allclose(run(model, {"x": x})[0], x @ nbits.quantize(w, 16)[3], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits,zero_points", [(4, True), (4, False), (8, True)],
                         ids=["int4-zero-points", "int4-symmetric", "int8"])
def test_hidden_channels_prune_in_whole_blocks(bits, zero_points):
    """fc1's 64 columns (B rows, scales, zero points, bias) and fc2's K prune together in blocks of 16: 4 channels."""
    dg = assert_all_groups_oracle(_mlp(bits=bits, zero_points=zero_points), min_groups=1)
    (group,) = dg.prunable_groups()
    assert group.size == 4
    fc2_b = next(e for e in group.ends if e.tensor == "fc2_B")
    assert [len(ch[fc2_b]) for ch in group.channels] == [1] * 4  # a blob each
    fc1_b = next(e for e in group.ends if e.tensor == "fc1_B")
    assert [len(ch[fc1_b]) for ch in group.channels] == [16] * 4  # sixteen columns each


def test_pruned_model_keeps_the_attributes_and_packing_onnxruntime_checks():
    from onnxprune import Pruner
    pruner = Pruner.from_model(_mlp())
    pruner.prune(ratio=0.5)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    fc2 = next(n for n in pruned.graph.node if n.name == "fc2")
    attrs = {a.name: a.i for a in fc2.attribute}
    assert attrs["K"] == 32 and attrs["N"] == 24
    zero = next(t for t in pruned.graph.initializer if t.name == fc2.input[3])
    assert list(zero.dims) == [24]  # 2 blocks of 4 bits per column: one byte each (was 2)
    feeds = random_feeds(_mlp())
    assert run(pruned, feeds)[0].shape == (2, 5, 24)


def test_partial_last_block_is_a_barrier_with_its_reason():
    dg = depgraph(_mlp(hidden=40))  # 40 = 2 blocks of 16 and one of 8
    assert not dg.prunable_groups()
    assert any("K = 40 is not a multiple of block_size 16" in g.describe() for g in dg.groups)


def test_blocks_are_scored_on_dequantized_weights():
    """Every block's codes span the same range (scales absorb the magnitude): only the dequantized values tell
    that fc1's columns 0-15 (x0.01) and 32-47 (x0.1) matter least."""
    from onnxprune.importance import l1
    from onnxprune.scoring import ScoringContext
    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((48, 64)).astype(np.float32)
    w1[:, :16] *= 0.01
    w1[:, 32:48] *= 0.1
    n1, i1 = nbits.layer("fc1", "x", w1, 16)
    n2, i2 = nbits.layer("fc2", "h", rng.standard_normal((64, 24)).astype(np.float32), 16)
    graph = helper.make_graph([n1, helper.make_node("Relu", ["fc1"], ["h"], name="relu"), n2], "nbits",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 48])],
                              [helper.make_tensor_value_info("fc2", TensorProto.FLOAT, [2, 5, 24])], i1 + i2)
    dg = depgraph(helper.make_model(graph, opset_imports=OPSETS))
    (group,) = dg.prunable_groups()
    score = l1(ScoringContext(dg, np.random.default_rng(0)), group)
    assert score[[0, 2]].max() < 0.5 * score[[1, 3]].min()  # on the codes, all four score within 5%
