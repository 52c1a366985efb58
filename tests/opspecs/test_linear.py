"""Gemm / MatMul rules (opspecs/linear.py): the K axis and the N axis prune independently."""
import numpy as np
import pytest

from onnxprune.rules import IN
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph, prune_channels
from support.protos import initializers as _inits


def _input(model, node_name, slot):
    node = next(n for n in model.graph.node if n.name == node_name)
    return _inits(model)[node.input[slot]]


def _gemm(b, x, nout, transA=0, transB=0, bias_shape="N"):
    a_shape = b.shape_of(x)
    k = a_shape[0] if transA else a_shape[1]
    w = b.param((nout, k) if transB else (k, nout), scale=1.0 / np.sqrt(k))
    ins = [x, w]
    if bias_shape == "N":
        ins.append(b.param((nout,), scale=0.1))
    elif bias_shape == "1N":
        ins.append(b.param((1, nout), scale=0.1))
    elif bias_shape == "scalar":
        ins.append(b.param((1,), scale=0.1))
    elif bias_shape == "MN":
        ins.append(b.param((a_shape[1] if transA else a_shape[0], nout), scale=0.1))
    return b.op("Gemm", ins, transA=transA, transB=transB)


@pytest.mark.parametrize("transB", [0, 1])
@pytest.mark.parametrize("bias_shape", ["N", "1N", "MN", "scalar", None])
def test_gemm_output_group_holds_weight_columns_and_bias(transB, bias_shape):
    b = GraphBuilder(seed=1)
    y = b.relu(_gemm(b, b.input("input", [3, 12]), 8, transB=transB, bias_shape=bias_shape))
    b.output(b.rename(_gemm(b, y, 4, transB=1), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Gemm_0")
    assert group.prunable and group.size == 8
    g0, g1 = model.graph.node[0], model.graph.node[2]
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    assert params[g0.input[1]] == ((0,) if transB else (1,))
    assert params[g1.input[1]] == (1,)  # consumer K axis, transB=1
    if bias_shape == "N":
        assert params[g0.input[2]] == (0,)
    elif bias_shape in ("1N", "MN"):
        assert params[g0.input[2]] == (1,)
    elif bias_shape == "scalar":
        assert g0.input[2] not in params  # broadcast: untouched
    assert len(params) == (3 if bias_shape in ("N", "1N", "MN") else 2)
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 3, 4])
    assert _input(pruned, "Gemm_0", 1).shape == ((5, 12) if transB else (12, 5))
    assert _input(pruned, "Gemm_1", 1).shape == (4, 5)
    if bias_shape == "N":
        assert _input(pruned, "Gemm_0", 2).shape == (5,)
    elif bias_shape == "1N":
        assert _input(pruned, "Gemm_0", 2).shape == (1, 5)
    elif bias_shape == "MN":
        assert _input(pruned, "Gemm_0", 2).shape == (3, 5)
    elif bias_shape == "scalar":
        assert _input(pruned, "Gemm_0", 2).shape == (1,)


@pytest.mark.parametrize("transA", [0, 1])
@pytest.mark.parametrize("transB", [0, 1])
def test_gemm_consumer_k_axis_follows_transA_transB(transA, transB):
    """The producer's N axis is the consumer's K axis: axis 1 of A (axis 0 with transA)."""
    b = GraphBuilder(seed=2)
    y = b.relu(_gemm(b, b.input("input", [3, 12]), 8, transB=1))
    if transA:
        y = b.op("Transpose", [y], perm=[1, 0])  # [8, 3]: K on axis 0
    b.output(b.rename(_gemm(b, y, 4, transA=transA, transB=transB), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Gemm_0")
    assert group.prunable and group.size == 8
    consumer = next(n for n in model.graph.node if n.name == "Gemm_1")
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    assert params[consumer.input[1]] == ((1,) if transB else (0,))
    k_end = next(e for e in group.ends if e.node == "Gemm_1" and e.port == IN(0))
    assert k_end.axes == ((0,) if transA else (1,))
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [1, 2, 7])
    assert _input(pruned, "Gemm_1", 1).shape == ((4, 5) if transB else (5, 4))


def test_gemm_rows_are_not_prunable():
    """Pruning the M axis of a Gemm's A (through a Transpose) is a barrier."""
    b = GraphBuilder(seed=3)
    y = _gemm(b, b.input("input", [3, 12]), 8, transB=1)
    y = b.op("Transpose", [y], perm=[1, 0])  # [8, 3]: the 8 channels become Gemm_1's rows
    b.output(b.rename(_gemm(b, y, 4, transB=1), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Gemm_0")
    assert not group.prunable
    assert any("Gemm Gemm_1" in r and "rows" in r for r in group.blocked), group.blocked


def test_matmul_constant_weight_2d_input():
    b = GraphBuilder(seed=4)
    x = b.input("input", [3, 12])
    y = b.relu(b.op("MatMul", [x, b.param((12, 8), scale=0.3)]))
    b.output(b.rename(b.op("MatMul", [y, b.param((8, 4), scale=0.3)]), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("MatMul_0")
    assert group.prunable and group.size == 8
    m0, m1 = model.graph.node[0], model.graph.node[2]
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    assert params == {m0.input[1]: (1,), m1.input[1]: (0,)}
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 1, 2])
    assert _input(pruned, "MatMul_0", 1).shape == (12, 5)
    assert _input(pruned, "MatMul_1", 1).shape == (5, 4)


def test_matmul_constant_weight_3d_input_with_bias_add():
    b = GraphBuilder(seed=5)
    x = b.input("input", [2, 5, 12])
    y = b.op("MatMul", [x, b.param((12, 8), scale=0.3)])
    y = b.relu(b.op("Add", [y, b.param((8,), scale=0.1)]))
    b.output(b.rename(b.op("MatMul", [y, b.param((8, 4), scale=0.3)]), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("MatMul_0")
    assert group.prunable and group.size == 8
    out_end = next(e for e in group.ends if e.node == "MatMul_0" and e.port.side == "out")
    assert out_end.axes == (2,)
    bias = model.graph.node[1].input[1]
    assert {e.tensor: e.axes for e in group.ends if e.kind == "param"}[bias] == (0,)
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [6, 7])
    assert _input(pruned, "MatMul_0", 1).shape == (12, 6)
    assert _input(pruned, "Add_0", 1).shape == (6,)
    assert _input(pruned, "MatMul_1", 1).shape == (6, 4)


def test_matmul_with_constant_left_operand_prunes_its_k_axis():
    """W @ X with a constant W [N, K]: X's rows (the conv channels) are W's columns."""
    b = GraphBuilder(seed=7)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    y = b.op("Reshape", [x, b.const(np.array([6, 16], np.int64))])
    b.output(b.rename(b.op("MatMul", [b.param((5, 6), scale=0.4), y]), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 6
    w = model.graph.node[-1].input[0]
    assert {e.tensor: e.axes for e in group.ends if e.kind == "param"}[w] == (1,)
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [2])
    assert _input(pruned, "MatMul_0", 0).shape == (5, 5)
    assert _input(pruned, "Reshape_0", 1).tolist() == [5, 16]


def test_matmul_of_two_activations_is_no_root():
    """Without a constant weight a MatMul creates no group of its own."""
    b = GraphBuilder(seed=6)
    x = b.input("input", [4, 6])
    y = b.op("MatMul", [x, b.op("Transpose", [x], perm=[1, 0])])
    b.output(b.rename(y, "output"))
    model = b.build()
    assert depgraph(model).groups == []
