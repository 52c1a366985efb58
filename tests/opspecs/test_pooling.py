"""Pooling rules (opspecs/pooling.py): channels pass through, spatial axes are pooled."""
import pytest

from onnxprune.rules import IN, OUT
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph, prune_channels, random_feeds, run

POOLS = {
    "MaxPool": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "AveragePool": dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    "LpPool": dict(kernel_shape=[2, 2], strides=[2, 2], p=2),
    "GlobalAveragePool": {},
    "GlobalMaxPool": {},
    "GlobalLpPool": dict(p=3),
}


def _pool_model(op, attrs):
    b = GraphBuilder(seed=1)
    x = b.conv(b.input("input", [1, 3, 8, 8]), 6)
    y = b.op(op, [x], **attrs)
    b.output(b.rename(b.conv(y, 4, k=1), "output"))
    return b.build()


@pytest.mark.parametrize("op", sorted(POOLS))
def test_pool_passes_channels_through(op):
    model = _pool_model(op, POOLS[op])
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    node = f"{op}_0"
    assert group is dg.group_of(node) and group.prunable and group.size == 6
    assert {e.port for e in group.ends if e.node == node} == {IN(0), OUT(0)}
    assert dg.prunable_groups() == [group]
    assert_all_groups_oracle(model)


def test_global_pool_then_flatten_then_gemm():
    b = GraphBuilder(seed=2)
    x = b.conv(b.input("input", [1, 3, 8, 8]), 6)
    y = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    b.output(b.rename(b.gemm(y, 3), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 6
    gemm_w = model.graph.node[-1].input[1]
    assert {e.tensor: e.axes for e in group.ends if e.kind == "param"}[gemm_w] == (1,)
    assert_all_groups_oracle(model)


def test_maxpool_with_indices_output_is_a_barrier():
    b = GraphBuilder(seed=3)
    x = b.conv(b.input("input", [1, 3, 8, 8]), 6)
    y, idx = b.op("MaxPool", [x], n_out=2, kernel_shape=[2, 2], strides=[2, 2])
    b.output(b.rename(b.conv(y, 4, k=1), "output"))
    b.output(b.rename(idx, "indices"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert not group.prunable
    assert any("MaxPool" in r and "indices" in r for r in group.blocked), group.blocked
    assert dg.prunable_groups() == []


def test_maxpool_with_unused_indices_slot_is_fine():
    """An empty second output name means no Indices: still prunable."""
    b = GraphBuilder(seed=4)
    x = b.conv(b.input("input", [1, 3, 8, 8]), 6)
    node_out = b.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    b.nodes[-1].output.append("")
    b.output(b.rename(b.conv(node_out, 4, k=1), "output"))
    model = b.build()
    dg = depgraph(model)
    assert dg.group_of("Conv_0").prunable
    assert_all_groups_oracle(model)


def test_pooled_model_keeps_output_shape_after_prune():
    model = _pool_model("MaxPool", POOLS["MaxPool"])
    dg = depgraph(model)
    feeds = random_feeds(model)
    pruned = prune_channels(dg, dg.group_of("Conv_0"), [0, 1, 2])
    assert run(pruned, feeds)[0].shape == run(model, feeds)[0].shape == (1, 4, 4, 4)
