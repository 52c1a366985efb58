"""Conv / ConvTranspose rules (opspecs/conv.py): plain, grouped, depthwise, transposed."""
import numpy as np
import onnx
import pytest

from onnxprune.rules import IN, OUT
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, assert_group_oracle, depgraph, prune_channels, random_feeds
from support.protos import initializers as _inits


def _weight(model, node_name, slot=1):
    node = next(n for n in model.graph.node if n.name == node_name)
    return _inits(model)[node.input[slot]]


def _attr(model, node_name, key):
    node = next(n for n in model.graph.node if n.name == node_name)
    return next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == key)


def _sandwich(mid, cin=8, hw=8):
    """input -> Conv_0 (cin channels) -> mid(b, x) -> Conv_last(4) -> output."""
    b = GraphBuilder(seed=3)
    x = b.conv(b.input("input", [1, 3, hw, hw]), cin)
    y = mid(b, x)
    b.output(b.rename(b.conv(y, 4), "output"))
    return b.build()


# ---- plain conv -----------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_plain_conv_output_group_holds_weight_bias_and_next_input(bias):
    b = GraphBuilder(seed=1)
    x = b.input("input", [1, 3, 8, 8])
    y = b.conv(x, 6, bias=bias)
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 6
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    w0, w1 = model.graph.node[0].input[1], model.graph.node[1].input[1]
    assert params[w0] == (0,) and params[w1] == (1,)
    assert len(params) == (3 if bias else 2)
    assert not bias or model.graph.node[0].input[2] in params
    # the graph input is no root: nothing groups Conv_0's input channels
    with pytest.raises(KeyError):
        dg.group_of("Conv_0", port=IN(0))
    assert any("graph output" in r for r in dg.group_of("Conv_1").blocked)
    assert dg.prunable_groups() == [group]
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 2, 5])
    assert _weight(pruned, "Conv_0").shape == (3, 3, 3, 3)
    assert _weight(pruned, "Conv_1").shape == (4, 3, 3, 3)
    if bias:
        assert _weight(pruned, "Conv_0", 2).shape == (3,)


def test_pruned_conv_keeps_the_right_channels():
    b = GraphBuilder(seed=1)
    y = b.conv(b.input("input", [1, 3, 8, 8]), 5)
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    pruned = prune_channels(dg, dg.group_of("Conv_0"), [1, 3])
    np.testing.assert_array_equal(_weight(pruned, "Conv_0"), _weight(model, "Conv_0")[[0, 2, 4]])
    np.testing.assert_array_equal(_weight(pruned, "Conv_1"), _weight(model, "Conv_1")[:, [0, 2, 4]])


def test_first_conv_on_one_channel_input_stays_prunable_on_its_output():
    b = GraphBuilder(seed=2)
    y = b.relu(b.conv(b.input("input", [1, 1, 8, 8]), 8))
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 8
    with pytest.raises(KeyError):
        dg.group_of("Conv_0", port=IN(0))
    assert all(e.port != IN(0) for e in group.ends if e.node == "Conv_0")
    assert_all_groups_oracle(model)


def test_conv_output_read_twice_couples_both_consumers():
    b = GraphBuilder(seed=4)
    y = b.conv(b.input("input", [1, 3, 8, 8]), 6)
    b.output(b.rename(b.op("Add", [b.conv(y, 4), b.conv(y, 4, k=1)]), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    weights = {e.tensor for e in group.ends if e.kind == "param" and e.axes == (1,)}
    assert weights == {model.graph.node[1].input[1], model.graph.node[2].input[1]}
    assert_all_groups_oracle(model)


# ---- grouped conv -----------------------------------------------------------
def test_grouped_conv_input_side_has_cin_over_group_channels():
    model = _sandwich(lambda b, x: b.relu(b.conv(x, 16, group=4)), cin=16)
    dg = depgraph(model)
    group = dg.group_of("Conv_1", port=IN(0))
    assert group is dg.group_of("Conv_0")
    assert group.size == 16 // 4 and group.prunable
    conv_in = next(e for e in group.ends if e.node == "Conv_1" and e.port == IN(0))
    # channel k of the group is the k-th position of every conv group: k, k+4, k+8, k+12
    for k, channel in enumerate(group.channels):
        np.testing.assert_array_equal(channel[conv_in], [k, k + 4, k + 8, k + 12])
    out = dg.group_of("Conv_1")
    assert out.size == 16 // 4 and out.prunable
    assert_all_groups_oracle(model, min_groups=2)


def test_grouped_conv_prune_keeps_group_attribute_and_slices_weight():
    model = _sandwich(lambda b, x: b.conv(x, 8, group=4), cin=16)
    dg = depgraph(model)
    pruned = prune_channels(dg, dg.group_of("Conv_0"), [1])
    assert _weight(pruned, "Conv_0").shape == (12, 3, 3, 3)
    assert _weight(pruned, "Conv_1").shape == (8, 3, 3, 3)
    assert _attr(pruned, "Conv_1", "group") == 4
    pruned = prune_channels(dg, dg.group_of("Conv_1"), [0])
    assert _weight(pruned, "Conv_1").shape == (4, 4, 3, 3)
    assert _weight(pruned, "Conv_2").shape == (4, 4, 3, 3)


# ---- depthwise ----------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_conv_couples_input_and_output(bias):
    model = _sandwich(lambda b, x: b.relu(b.conv(x, 8, group=8, bias=bias)))
    dg = depgraph(model)
    group = dg.group_of("Conv_1")
    assert group is dg.group_of("Conv_0") is dg.group_of("Conv_1", port=IN(0))
    assert group.size == 8 and group.prunable
    dw = model.graph.node[1]
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    assert params[dw.input[1]] == (0,)
    assert not bias or params[dw.input[2]] == (0,)
    assert dg.prunable_groups() == [group]
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 1, 6])
    assert _attr(pruned, "Conv_1", "group") == 5
    assert _weight(pruned, "Conv_1").shape == (5, 1, 3, 3)


def test_depthwise_conv_with_multiplier_two():
    model = _sandwich(lambda b, x: b.relu(b.conv(x, 16, group=8)))
    dg = depgraph(model)
    group = dg.group_of("Conv_1")
    assert group is dg.group_of("Conv_0")
    assert group.size == 8 and group.prunable
    out = next(e for e in group.ends if e.node == "Conv_1" and e.port == OUT(0))
    for k, channel in enumerate(group.channels):
        np.testing.assert_array_equal(channel[out], [2 * k, 2 * k + 1])
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [3, 4])
    assert _attr(pruned, "Conv_1", "group") == 6
    assert _weight(pruned, "Conv_1").shape == (12, 1, 3, 3)
    assert _weight(pruned, "Conv_2").shape == (4, 12, 3, 3)


def test_depthwise_then_grouped_conv():
    """Depthwise couples in/out, the grouped conv (group=2) then ties positions k and k+4."""
    model = _sandwich(lambda b, x: b.conv(b.conv(x, 8, group=8), 6, group=2))
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Conv_1") and group.size == 4 and group.prunable
    dw_out = next(e for e in group.ends if e.node == "Conv_1" and e.port == OUT(0))
    assert [c[dw_out].tolist() for c in group.channels] == [[k, k + 4] for k in range(4)]
    assert_all_groups_oracle(model, min_groups=2)
    pruned = prune_channels(dg, group, [0])
    assert _attr(pruned, "Conv_1", "group") == 6 and _attr(pruned, "Conv_2", "group") == 2
    assert _weight(pruned, "Conv_2").shape == (6, 3, 3, 3)


def test_grouped_then_depthwise_conv():
    model = _sandwich(lambda b, x: b.conv(b.conv(x, 8, group=4), 8, group=8))
    dg = depgraph(model)
    inner = dg.group_of("Conv_1")
    assert inner is dg.group_of("Conv_2") and inner.size == 2 and inner.prunable
    assert_all_groups_oracle(model, min_groups=2)
    pruned = prune_channels(dg, inner, [1])
    assert _attr(pruned, "Conv_1", "group") == 4 and _attr(pruned, "Conv_2", "group") == 4


def test_conv1d():
    b = GraphBuilder(seed=6)
    x = b.input("input", [1, 3, 10])
    y = b.relu(b.op("Conv", [x, b.param((6, 3, 3), scale=0.4)], kernel_shape=[3]))
    b.output(b.rename(b.op("Conv", [y, b.param((2, 6, 1), scale=0.4)], kernel_shape=[1]), "output"))
    model = b.build()
    dg = depgraph(model)
    assert dg.group_of("Conv_0").prunable and dg.group_of("Conv_0").size == 6
    assert_all_groups_oracle(model)
    assert _weight(prune_channels(dg, dg.group_of("Conv_0"), [0, 1]), "Conv_1").shape == (2, 4, 1)


# ---- ConvTranspose ---------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_weight_axis1_is_output_channels(bias):
    b = GraphBuilder(seed=5)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 8)
    y = b.relu(b.conv_transpose(x, 6, bias=bias))
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    tconv = model.graph.node[1]
    inner = dg.group_of("Conv_0")
    assert inner is dg.group_of("ConvTranspose_0", port=IN(0)) and inner.size == 8
    assert {e.tensor: e.axes for e in inner.ends if e.kind == "param"}[tconv.input[1]] == (0,)
    out = dg.group_of("ConvTranspose_0")
    assert out.size == 6 and out.prunable
    out_params = {e.tensor: e.axes for e in out.ends if e.kind == "param"}
    assert out_params[tconv.input[1]] == (1,)
    assert (len(tconv.input) > 2 and tconv.input[2] in out_params) == bias
    assert_all_groups_oracle(model, min_groups=2)
    pruned = prune_channels(dg, out, [0, 5])
    assert _weight(pruned, "ConvTranspose_0").shape == (8, 4, 2, 2)


def test_depthwise_conv_transpose_couples_input_and_output():
    def mid(b, x):
        c = b.shape_of(x)[1]
        w = b.param((c, 1, 2, 2), scale=0.5)
        return b.relu(b.op("ConvTranspose", [x, w, b.param((c,), scale=0.1)],
                           kernel_shape=[2, 2], strides=[2, 2], group=c))

    model = _sandwich(mid)
    dg = depgraph(model)
    group = dg.group_of("ConvTranspose_0")
    assert group is dg.group_of("Conv_0") and group.size == 8 and group.prunable
    assert dg.prunable_groups() == [group]
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [2, 3, 7])
    assert _attr(pruned, "ConvTranspose_0", "group") == 5
    assert _weight(pruned, "ConvTranspose_0").shape == (5, 1, 2, 2)


def test_grouped_conv_transpose():
    def mid(b, x):
        w = b.param((8, 3, 2, 2), scale=0.5)  # group 2: cin 8, cout 6
        return b.op("ConvTranspose", [x, w], kernel_shape=[2, 2], strides=[2, 2], group=2)

    model = _sandwich(mid)
    dg = depgraph(model)
    assert dg.group_of("Conv_0").size == 4
    assert dg.group_of("ConvTranspose_0").size == 3
    assert_all_groups_oracle(model, min_groups=2)


def test_conv_oracle_every_channel_subset():
    model = _sandwich(lambda b, x: b.relu(b.conv(x, 4)), cin=4)
    dg = depgraph(model)
    feeds = random_feeds(model)
    group = dg.group_of("Conv_0")
    for channels in ([0], [3], [1, 2], [0, 1, 3]):
        assert_group_oracle(dg, group, channels, feeds)
