"""Reduce* and Softmax rules (opspecs/reduce.py): axes reduced/normalized over are barriers."""
import numpy as np
import pytest

from onnxprune.plan import make_plan
from onnxprune.rules import IN, OUT
from onnxprune.opspecs.reduce import REDUCE
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph, prune_channels, random_feeds, run

# ReduceSum takes its axes as an input from opset 13, the others from opset 18
AXES_AS_INPUT_SINCE = {op: 13 if op == "ReduceSum" else 18 for op in REDUCE}


def _reduce(b, op, x, axes, keepdims=1, **attrs):
    if axes is None:
        return b.op(op, [x], keepdims=keepdims, **attrs)
    if b.opset >= AXES_AS_INPUT_SINCE[op]:
        return b.op(op, [x, b.const(np.array(axes, np.int64))], keepdims=keepdims, **attrs)
    return b.op(op, [x], axes=list(axes), keepdims=keepdims, **attrs)


def _reduce_model(op, opset, axes, keepdims):
    b = GraphBuilder(opset=opset, seed=1)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    if op == "ReduceLogSum":
        x = b.op("Sigmoid", [x])  # log of a positive sum
    y = _reduce(b, op, x, axes, keepdims)
    if keepdims:
        b.output(b.rename(b.conv(y, 3, k=1), "output"))
    else:
        b.output(b.rename(b.gemm(y, 3), "output"))
    return b.build()


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("opset,keepdims", [(13, 1), (13, 0), (18, 1)])
def test_reduce_over_spatial_axes_passes_channels(op, opset, keepdims):
    model = _reduce_model(op, opset, [2, 3], keepdims)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    node = f"{op}_0"
    assert group is dg.group_of(node) and group.prunable and group.size == 6
    assert next(e for e in group.ends if e.node == node and e.port == OUT(0)).axes == (1,)
    assert not any(e.node == node and e.port == IN(1) for e in group.ends)
    assert dg.prunable_groups() == [group]
    assert_all_groups_oracle(model)


def test_reduce_keepdims0_over_leading_axis_shifts_the_channel_axis():
    b = GraphBuilder(opset=13, seed=2)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    y = b.op("ReduceMean", [x], axes=[0], keepdims=0)  # [6, 4, 4]: channels now on axis 0
    y = b.op("Unsqueeze", [y, b.const(np.array([0], np.int64))])
    b.output(b.rename(b.conv(y, 3), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable
    assert next(e for e in group.ends if e.node == "ReduceMean_0" and e.port == OUT(0)).axes == (0,)
    assert_all_groups_oracle(model)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax"])
@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("axes", [[1], [1, 2, 3], [-3], None])
def test_reduce_over_the_channel_axis_is_a_hidden_size_statistic(op, opset, axes):
    """Valid with fewer channels, but a different statistic: inexact, pruned only with prune_hidden."""
    b = GraphBuilder(opset=opset, seed=3)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    y = _reduce(b, op, x, axes, keepdims=1)  # None: every axis is reduced
    b.output(b.rename(b.op("Add", [y, b.conv(b.input("other", [1, 3, 4, 4]), 1)]), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.kind == "hidden"
    assert f"{op}_0" in dg.inexact_nodes(group)
    assert make_plan(dg, ratio=0.5).decisions == ()
    assert [d.group for d in make_plan(dg, ratio=0.5, prune_hidden=True).decisions] == [group.id]
    assert_all_groups_oracle(model)  # inexact groups: valid, same output shapes


def test_reduce_with_noop_empty_axes_passes_everything():
    b = GraphBuilder(opset=18, seed=4)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    y = b.op("ReduceSum", [x], keepdims=1, noop_with_empty_axes=1)
    b.output(b.rename(b.conv(y, 3), "output"))
    model = b.build()
    dg = depgraph(model)
    assert dg.group_of("ReduceSum_0").prunable
    assert_all_groups_oracle(model)


def test_reduce_with_runtime_axes_is_a_barrier():
    b = GraphBuilder(opset=18, seed=5)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    axes = b.op("Concat", [b.const(np.array([2], np.int64)), b.const(np.array([3], np.int64))], axis=0)
    y = b.op("ReduceMean", [x, axes], keepdims=1)
    b.output(b.rename(y, "output"))
    model = b.build(check=False)
    out = model.graph.output[0].type.tensor_type
    out.ClearField("shape")
    for d in (1, 6, 1, 1):
        out.shape.dim.add().dim_value = d
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert not group.prunable
    assert any("ReduceMean ReduceMean_0" in r and "run time" in r for r in group.blocked), group.blocked


# ---- Softmax ----------------------------------------------------------------------------------------
def _softmax_model(op, opset, axis):
    b = GraphBuilder(opset=opset, seed=6)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    y = b.op(op, [x]) if axis is None else b.op(op, [x], axis=axis)
    b.output(b.rename(b.conv(y, 3), "output"))
    return b.build()


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset,axis", [(13, -1), (13, None), (13, 2), (13, 0), (11, 2), (11, 3)])
def test_softmax_over_spatial_axes_passes_channels(op, opset, axis):
    model = _softmax_model(op, opset, axis)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of(f"{op}_0") and group.prunable and group.size == 6
    if op != "Hardmax":  # Hardmax is piecewise constant: ties between zeroed and real values differ
        assert_all_groups_oracle(model)
    else:
        feeds = random_feeds(model)
        pruned = prune_channels(dg, group, [0, 2, 4])
        assert run(pruned, feeds)[0].shape == run(model, feeds)[0].shape


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset,axis", [(13, 1), (13, -3), (11, 1), (11, None), (11, 0)])
def test_softmax_over_channels_is_a_barrier(op, opset, axis):
    """Opset < 13 coerces to 2D: every axis from `axis` on is normalized (default axis 1)."""
    model = _softmax_model(op, opset, axis)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert not group.prunable
    assert any(f"{op} {op}_0" in r and "normalized over" in r for r in group.blocked), group.blocked
