"""Reshape-like and Transpose rules (opspecs/shape.py): Flatten, Reshape, Squeeze/Unsqueeze,
Transpose, channel shuffle."""
import numpy as np
from onnx import numpy_helper
import onnx
import pytest

from onnxprune.rules import IN, OUT
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph, prune_channels
from support.protos import initializers as _inits, node as _node, const_input as _const_input, check_runs as _check_runs


def _index_at(group, node, port):
    end = next(e for e in group.ends if e.node == node and e.port == port)
    return [c[end].tolist() if end in c else [] for c in group.channels]


# ---- Flatten / Reshape to features ------------------------------------------------------------------
def test_flatten_then_gemm_one_channel_is_hw_features():
    b = GraphBuilder(seed=1)
    x = b.relu(b.conv(b.input("input", [1, 3, 3, 3]), 4))
    y = b.op("Flatten", [x], axis=1)  # [1, 36]
    b.output(b.rename(b.gemm(y, 5), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 4
    assert _index_at(group, "Gemm_0", IN(0)) == [list(range(9 * k, 9 * k + 9)) for k in range(4)]
    w = _node(model, "Gemm_0").input[1]
    assert {e.tensor: e.axes for e in group.ends if e.kind == "param"}[w] == (1,)
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [1])
    kept = [c for c in range(36) if not 9 <= c < 18]
    np.testing.assert_array_equal(_inits(pruned)[w], _inits(model)[w][:, kept])


@pytest.mark.parametrize("target", [[1, 36], [1, -1], [0, -1], [-1, 36]])
def test_reshape_to_features_rewrites_the_constant_shape(target):
    b = GraphBuilder(seed=2)
    x = b.relu(b.conv(b.input("input", [1, 3, 3, 3]), 4))
    y = b.op("Reshape", [x, b.const(np.array(target, np.int64))])
    b.output(b.rename(b.gemm(y, 5), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Reshape_0") and group.prunable and group.size == 4
    assert _index_at(group, "Reshape_0", OUT(0)) == [list(range(9 * k, 9 * k + 9)) for k in range(4)]
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 3])
    new_target = _const_input(pruned, "Reshape_0", 1).tolist()
    assert new_target == [18 if d == 36 else d for d in target]
    _check_runs(model, pruned)


def test_reshape_with_a_concat_built_target_rewrites_its_constant_piece():
    b = GraphBuilder(seed=3)
    x = b.conv(b.input("input", [1, 3, 3, 3]), 4)
    shape = b.op("Concat", [b.const(np.array([1], np.int64)), b.const(np.array([36], np.int64))], axis=0)
    y = b.op("Reshape", [x, shape])
    z = b.op("Gemm", [y, b.param((5, 36))], transB=1)
    b.output(b.rename(z, "output"))
    model = b.build(check=False)
    if not model.graph.output[0].type.tensor_type.HasField("shape"):
        for d in (1, 5):
            model.graph.output[0].type.tensor_type.shape.dim.add().dim_value = d
    dg = assert_all_groups_oracle(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 4
    pruned = prune_channels(dg, group, [1])
    concat = next(n for n in pruned.graph.node if n.op_type == "Concat")
    pieces = {t.name: numpy_helper.to_array(t).tolist() for t in pruned.graph.initializer}
    assert pieces[concat.input[1]] == [27]


def test_reshape_merging_batch_and_channels_is_a_barrier():
    b = GraphBuilder(seed=4)
    x = b.conv(b.input("input", [2, 3, 3, 3]), 4)
    y = b.op("Reshape", [x, b.const(np.array([8, 9], np.int64))])  # batch*channels rows
    b.output(b.rename(b.op("MatMul", [y, b.param((9, 5))]), "output"))
    dg = depgraph(b.build())
    assert not dg.group_of("Conv_0").prunable


# ---- Squeeze / Unsqueeze -------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_then_unsqueeze_pass_channels(opset):
    b = GraphBuilder(opset=opset, seed=5)
    x = b.op("GlobalAveragePool", [b.conv(b.input("input", [1, 3, 6, 6]), 6)])  # [1, 6, 1, 1]
    if opset >= 13:
        y = b.op("Squeeze", [x, b.const(np.array([2, 3], np.int64))])
    else:
        y = b.op("Squeeze", [x], axes=[2, 3])
    y = b.relu(b.gemm(y, 5))  # [1, 5]
    if opset >= 13:
        z = b.op("Unsqueeze", [y, b.const(np.array([2, 3], np.int64))])
    else:
        z = b.op("Unsqueeze", [y], axes=[2, 3])
    b.output(b.rename(b.conv(z, 3, k=1), "output"))
    model = b.build()
    dg = depgraph(model)
    first, second = dg.group_of("Conv_0"), dg.group_of("Gemm_0")
    assert first is dg.group_of("Squeeze_0") and first.size == 6 and first.prunable
    assert second is dg.group_of("Unsqueeze_0") and second.size == 5 and second.prunable
    assert next(e for e in first.ends if e.node == "Squeeze_0" and e.port == OUT(0)).axes == (1,)
    assert next(e for e in second.ends if e.node == "Unsqueeze_0" and e.port == OUT(0)).axes == (1,)
    assert_all_groups_oracle(model, min_groups=2)


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_without_axes_pins_its_axes_when_one_channel_is_left(opset):
    """Squeeze with no axes drops every size-1 axis: a channel axis pruned to 1 must not vanish."""
    b = GraphBuilder(opset=opset, seed=6)
    x = b.op("GlobalAveragePool", [b.conv(b.input("input", [1, 3, 6, 6]), 3)])  # [1, 3, 1, 1]
    y = b.op("Squeeze", [x])  # [3]
    y = b.op("Unsqueeze", [y, b.const(np.array([0], np.int64))]) if opset >= 13 else \
        b.op("Unsqueeze", [y], axes=[0])  # [1, 3]
    b.output(b.rename(b.gemm(y, 2), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Squeeze_0") and group.prunable and group.size == 3
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 2])  # one channel left
    _check_runs(model, pruned)
    squeeze = _node(pruned, "Squeeze_0")
    axes = _inits(pruned)[squeeze.input[1]].tolist() if opset >= 13 else \
        list(onnx.helper.get_attribute_value(squeeze.attribute[0]))
    assert axes == [0, 2, 3]
    # with channels to spare nothing needs pinning, but pinned axes are still right
    _check_runs(model, prune_channels(dg, group, [1]))


# ---- Transpose -----------------------------------------------------------------------------------------
def test_transpose_to_channels_last_then_matmul():
    b = GraphBuilder(seed=7)
    x = b.relu(b.conv(b.input("input", [1, 3, 4, 4]), 6))
    y = b.op("Transpose", [x], perm=[0, 2, 3, 1])  # [1, 4, 4, 6]
    y = b.op("MatMul", [y, b.param((6, 5), scale=0.4)])  # [1, 4, 4, 5]
    b.output(b.rename(b.op("Transpose", [y], perm=[0, 3, 1, 2]), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Transpose_0") and group.prunable and group.size == 6
    assert next(e for e in group.ends if e.node == "Transpose_0" and e.port == OUT(0)).axes == (3,)
    w = _node(model, "MatMul_0").input[1]
    assert {e.tensor: e.axes for e in group.ends if e.kind == "param"}[w] == (0,)
    assert any("graph output" in r for r in dg.group_of("MatMul_0").blocked)
    assert_all_groups_oracle(model)
    assert _inits(prune_channels(dg, group, [2, 3]))[w].shape == (4, 5)


def test_transpose_round_trip_back_to_conv():
    b = GraphBuilder(seed=8)
    x = b.conv(b.input("input", [1, 3, 4, 5]), 6)
    y = b.op("Transpose", [b.op("Transpose", [x], perm=[0, 3, 1, 2])], perm=[0, 2, 3, 1])
    b.output(b.rename(b.conv(y, 3), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 6
    assert next(e for e in group.ends if e.node == "Transpose_1" and e.port == IN(0)).axes == (2,)
    assert_all_groups_oracle(model)


# ---- channel shuffle -------------------------------------------------------------------------------------
def _shuffle_model(transpose=True):
    b = GraphBuilder(seed=9)
    x = b.relu(b.conv(b.input("input", [1, 3, 4, 4]), 8))
    y = b.op("Reshape", [x, b.const(np.array([1, 2, 4, 4, 4], np.int64))])
    if transpose:
        y = b.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
    y = b.op("Reshape", [y, b.const(np.array([1, 8, 4, 4], np.int64))])
    b.output(b.rename(b.conv(y, 3), "output"))
    return b.build()


def test_reshape_into_groups_and_back_prunes_whole_groups():
    """Reshape [N, 8, H, W] -> [N, 2, 4, H, W] -> [N, 8, H, W]: splitting an axis makes its
    blocks the unit (attention heads, norm groups): group channel k = conv channels 4k..4k+3."""
    model = _shuffle_model(transpose=False)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 2
    assert _index_at(group, "Conv_0", OUT(0)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert next(e for e in group.ends if e.node == "Reshape_0" and e.port == OUT(0)).axes == (1,)
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [1])
    assert _const_input(pruned, "Reshape_0", 1).tolist() == [1, 1, 4, 4, 4]
    assert _const_input(pruned, "Reshape_1", 1).tolist() == [1, 4, 4, 4]
    _check_runs(model, pruned)


def test_channel_shuffle_is_never_pruned_wrongly():
    """Whatever the shuffle's group looks like, every prunable group matches the oracle."""
    model = _shuffle_model()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Transpose_0") is dg.group_of("Reshape_1")
    assert not group.blocked
    assert_all_groups_oracle(model, min_groups=0)


def test_channel_shuffle_keeps_groups_dense():
    """Reshape [N, 2, 4, H, W] -> Transpose -> Reshape [N, 8, H, W]: channel g*4+k goes to k*2+g.
    Removing in-group position k removes it from both groups, so both reshapes stay dense."""
    model = _shuffle_model()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 4
    assert _index_at(group, "Conv_0", OUT(0)) == [[k, 4 + k] for k in range(4)]
    assert _index_at(group, "Conv_1", IN(0)) == [[2 * k, 2 * k + 1] for k in range(4)]
    assert dg.prunable_groups() == [group]
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [1])
    assert _const_input(pruned, "Reshape_0", 1).tolist() == [1, 2, 3, 4, 4]
    assert _const_input(pruned, "Reshape_1", 1).tolist() == [1, 6, 4, 4]
    w = _node(model, "Conv_1").input[1]
    np.testing.assert_array_equal(_inits(pruned)[w], _inits(model)[w][:, [0, 1, 4, 5, 6, 7]])
    _check_runs(model, pruned)
