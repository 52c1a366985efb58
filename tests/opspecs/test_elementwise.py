"""Broadcasting elementwise rules (opspecs/elementwise.py): per-channel constants are sliced,
two producers of one elementwise op share one group, Div/Pow mask with a neutral 1."""
import numpy as np
import pytest

from onnxprune import onnx_out
from onnxprune.masking import mask_group
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph, prune_channels, random_feeds, run
from support.protos import initializers as _inits

C = 6
BINARY = ["Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Pow", "Mean"]


def _positive(b, shape):
    """Constants away from zero: safe divisors and exponents."""
    return b.param(b.rng.uniform(0.5, 1.5, shape).astype(np.float32))


def _const_model(op, const_shape, const_first=False):
    b = GraphBuilder(seed=1)
    x = b.conv(b.input("input", [1, 3, 6, 6]), C)
    if op == "Pow":
        x = b.op("Sigmoid", [x])  # positive base
    k = _positive(b, const_shape)
    y = b.op(op, [k, x] if const_first else [x, k])
    b.output(b.rename(b.conv(y, 4), "output"))
    return b.build(), k


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("const_shape", [(C, 1, 1), (1, C, 1, 1)])
def test_per_channel_constant_is_sliced_with_the_channels(op, const_shape):
    model, k = _const_model(op, const_shape)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == C
    node = next(n for n in model.graph.node if n.op_type == op)
    assert group is dg.group_of(node.name)
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    assert params[k] == (len(const_shape) - 3,)  # the channel axis of the constant
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 2, 3])
    new_shape = list(const_shape)
    new_shape[len(const_shape) - 3] = C - 3
    assert _inits(pruned)[k].shape == tuple(new_shape)
    np.testing.assert_array_equal(_inits(pruned)[k].reshape(-1), _inits(model)[k].reshape(-1)[[1, 4, 5]])


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Max", "Min", "Sum"])
def test_per_channel_constant_as_first_operand(op):
    model, k = _const_model(op, (C, 1, 1), const_first=True)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and k in {e.tensor for e in group.ends}
    assert_all_groups_oracle(model)


@pytest.mark.parametrize("const_shape", [(), (1,), (1, 1, 1), (1, 6, 6), (6,)])
def test_broadcast_constant_without_channel_axis_is_untouched(const_shape):
    """A scalar or a spatial-only constant (W = 6 happens to equal C) is not coupled to channels."""
    model, k = _const_model("Add", const_shape)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and k not in {e.tensor for e in group.ends}
    assert_all_groups_oracle(model)
    assert _inits(prune_channels(dg, group, [1]))[k].shape == const_shape


@pytest.mark.parametrize("op", ["Div", "Pow"])
def test_div_and_pow_mask_their_second_operand_with_one(op):
    model, k = _const_model(op, (C, 1, 1))
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    masked = onnx_out.to_model(mask_group(dg, group, [1, 3]))
    value = _inits(masked)[k].reshape(-1)
    np.testing.assert_array_equal(value[[1, 3]], [1.0, 1.0])
    np.testing.assert_array_equal(value[[0, 2, 4, 5]], _inits(model)[k].reshape(-1)[[0, 2, 4, 5]])
    # the conv weights still mask with zero
    w0 = _inits(masked)[model.graph.node[0].input[1]]
    assert not w0[[1, 3]].any() and w0[[0, 2]].any()
    assert all(np.isfinite(y).all() for y in run(masked, random_feeds(model)))


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
def test_other_ops_mask_their_constant_with_zero(op):
    model, k = _const_model(op, (C, 1, 1))
    dg = depgraph(model)
    masked = onnx_out.to_model(mask_group(dg, dg.group_of("Conv_0"), [2]))
    assert _inits(masked)[k].reshape(-1)[2] == 0.0


@pytest.mark.parametrize("op", BINARY)
def test_two_conv_branches_share_one_group(op):
    b = GraphBuilder(seed=2)
    x = b.input("input", [1, 3, 6, 6])
    left, right = b.conv(x, C), b.conv(x, C, k=1)
    if op == "Pow":
        left = b.op("Sigmoid", [left])  # positive base
    if op == "Div":
        right = b.op("Sigmoid", [right])  # divisor away from zero
    y = b.op(op, [left, right])
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Conv_1") and group.prunable and group.size == C
    w_left, w_right = model.graph.node[0].input[1], model.graph.node[1].input[1]
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    assert params[w_left] == (0,) and params[w_right] == (0,)
    assert dg.prunable_groups() == [group]
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 5])
    assert _inits(pruned)[w_left].shape[0] == _inits(pruned)[w_right].shape[0] == C - 2


def test_residual_block_one_group_for_the_trunk():
    b = GraphBuilder(seed=3)
    x = b.relu(b.bn(b.conv(b.input("input", [1, 3, 8, 8]), C, bias=False)))
    y = b.bn(b.conv(b.relu(b.conv(x, 5)), C, bias=False))
    z = b.relu(b.op("Add", [x, y]))
    b.output(b.rename(b.conv(z, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    trunk = dg.group_of("Conv_0")
    assert trunk is dg.group_of("Conv_2") is dg.group_of("Add_0")
    assert trunk.size == C and trunk.prunable
    inner = dg.group_of("Conv_1")
    assert inner is not trunk and inner.size == 5 and inner.prunable
    assert_all_groups_oracle(model, min_groups=2)


def test_sum_of_three_inputs():
    b = GraphBuilder(seed=4)
    x = b.input("input", [1, 3, 6, 6])
    y = b.op("Sum", [b.conv(x, C), b.conv(x, C), _positive(b, (C, 1, 1))])
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Conv_1") and group.prunable
    assert len({e.tensor for e in group.ends if e.kind == "param"}) == 2 + 2 + 1 + 1  # 2 w, 2 b, const, w
    assert_all_groups_oracle(model)


def test_prelu_per_channel_slope():
    b = GraphBuilder(seed=5)
    x = b.conv(b.input("input", [1, 3, 6, 6]), C)
    slope = b.param(np.linspace(0.05, 0.3, C, dtype=np.float32).reshape(C, 1, 1))
    y = b.op("PRelu", [x, slope])
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("PRelu_0") and group.prunable
    assert {e.tensor: e.axes for e in group.ends if e.kind == "param"}[slope] == (0,)
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 1])
    assert _inits(pruned)[slope].shape == (C - 2, 1, 1)
    np.testing.assert_allclose(_inits(pruned)[slope].reshape(-1), np.linspace(0.05, 0.3, C)[2:], rtol=1e-6)


def test_prelu_shared_slope_is_untouched():
    b = GraphBuilder(seed=6)
    x = b.conv(b.input("input", [1, 3, 6, 6]), C)
    slope = b.param(np.array([0.1], np.float32))
    b.output(b.rename(b.conv(b.op("PRelu", [x, slope]), 4), "output"))
    model = b.build()
    dg = depgraph(model)
    assert slope not in {e.tensor for e in dg.group_of("Conv_0").ends}
    assert_all_groups_oracle(model)


def test_one_channel_operand_broadcast_against_channels_is_a_barrier():
    """Add(conv with 1 channel, conv with C channels): the 1-channel side is broadcast."""
    b = GraphBuilder(seed=7)
    x = b.input("input", [1, 3, 6, 6])
    one, many = b.conv(x, 1), b.conv(x, C)
    b.output(b.rename(b.conv(b.op("Add", [one, many]), 4), "output"))
    model = b.build()
    dg = depgraph(model)
    assert any("broadcast" in r for r in dg.group_of("Conv_0").blocked)
    many_group = dg.group_of("Conv_1")
    assert many_group.prunable and many_group.size == C
    assert not any(e.node == "Conv_0" for e in many_group.ends)
    assert_all_groups_oracle(model)
