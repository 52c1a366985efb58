"""Unary rules (opspecs/activation.py): every UNARY op, Clip and CastLike pass channels through.

Each op sits between two convs (Conv_0 -> [pre] -> op -> [post] -> Conv_1): the
pruned channels end in Conv_1's zeroed input weights, so even ops that do not
map zero to zero (Sigmoid, Cos, Exp...) must match the oracle.
"""
import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from onnxprune.rules import IN, OUT
from onnxprune.opspecs.activation import UNARY
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph, prune_channels

OPSET = 20  # Gelu needs 20, Mish 18, HardSwish 14

# attributes some ops need
ATTRS = {
    "Cast": {"to": TensorProto.FLOAT},
    "LeakyRelu": {"alpha": 0.1},
    "Elu": {"alpha": 0.7},
    "Celu": {"alpha": 0.7},
    "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
    "ThresholdedRelu": {"alpha": 0.3},
    "Shrink": {"bias": 0.1, "lambd": 0.2},
    "Gelu": {"approximate": "tanh"},
}
# ops whose domain is limited: feed them Sigmoid(x) in (0, 1) (or 1 + Sigmoid(x) for Acosh)
POSITIVE_UNIT = {"Log", "Sqrt", "Reciprocal", "Asin", "Acos", "Atanh", "Acosh"}
NOT_FLOAT_IN = {"Not"}  # bool in, bool out
BOOL_OUT = {"IsNaN", "IsInf", "Not"}  # need a Cast back to float before the next conv


def _unary_model(op):
    b = GraphBuilder(opset=OPSET, seed=7)
    x = b.conv(b.input("input", [1, 3, 6, 6]), 6)
    if op in POSITIVE_UNIT:
        x = b.op("Sigmoid", [x])
        if op == "Acosh":
            x = b.op("Add", [x, b.const(np.array(1.0, np.float32))])
    if op in NOT_FLOAT_IN:
        x = b.op("Cast", [x], to=TensorProto.BOOL)
    y = b.op(op, [x], **ATTRS.get(op, {}))
    if op in BOOL_OUT:
        y = b.op("Cast", [y], to=TensorProto.FLOAT)
    b.output(b.rename(b.conv(y, 4), "output"))
    return b.build()


@pytest.mark.parametrize("op", UNARY + ("Identity", "Dropout"))
def test_unary_op_passes_channels_through(op):
    model = _unary_model(op)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 6, group.describe()
    node = next(n for n in model.graph.node if n.op_type == op and n.name.startswith(op))
    assert group is dg.group_of(node.name)
    assert {e.port for e in group.ends if e.node == node.name} == {IN(0), OUT(0)}
    assert dg.prunable_groups() == [group]
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [1, 4])
    w1 = next(t for t in pruned.graph.initializer if t.name == pruned.graph.node[-1].input[1])
    assert tuple(w1.dims) == (4, 4, 3, 3)


def test_dropout_with_mask_output_couples_the_mask():
    b = GraphBuilder(opset=13, seed=8)
    x = b.conv(b.input("input", [1, 3, 6, 6]), 6)
    y, mask = b.op("Dropout", [x], n_out=2)
    b.output(b.rename(b.conv(y, 4), "output"))
    b.output(b.rename(mask, "mask"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert {e.port for e in group.ends if e.node == "Dropout_0"} == {IN(0), OUT(0), OUT(1)}
    # the mask is a graph output: its channels cannot change
    assert not group.prunable and any("graph output mask" in r for r in group.blocked)


def test_relu_output_as_graph_output_is_a_barrier():
    b = GraphBuilder(seed=9)
    y = b.relu(b.conv(b.input("input", [1, 3, 6, 6]), 6))
    y = b.rename(y, "feat")
    b.output(y)
    b.output(b.rename(b.conv(y, 4), "output"))
    dg = depgraph(b.build())
    assert dg.prunable_groups() == []
    assert any("graph output feat" in r for r in dg.group_of("Conv_0").blocked)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_clip_with_min_max_inputs(opset):
    b = GraphBuilder(opset=opset, seed=10)
    x = b.conv(b.input("input", [1, 3, 6, 6]), 6)
    y = b.relu6(x)  # Clip(x, 0, 6): min/max are scalar inputs
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Clip_0") and group.prunable and group.size == 6
    clip = next(n for n in model.graph.node if n.op_type == "Clip")
    assert not any(e.tensor in clip.input[1:] for e in group.ends)
    assert {e.port for e in group.ends if e.node == "Clip_0"} == {IN(0), OUT(0)}
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 5])
    inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert [inits[n].shape for n in clip.input[1:]] == [(), ()]


def test_clip_with_attributes_opset9():
    b = GraphBuilder(opset=9, seed=11)
    x = b.conv(b.input("input", [1, 3, 6, 6]), 6)
    y = b.op("Clip", [x], min=0.0, max=6.0)
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    assert dg.group_of("Clip_0").prunable
    assert_all_groups_oracle(model)


def test_clip_with_only_max_input():
    b = GraphBuilder(opset=13, seed=12)
    x = b.conv(b.input("input", [1, 3, 6, 6]), 6)
    y = b.op("Clip", [x, "", b.const(np.array(1.0, np.float32))])
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    assert depgraph(model).group_of("Clip_0").prunable
    assert_all_groups_oracle(model)


def test_castlike_reads_only_the_type_of_its_second_input():
    b = GraphBuilder(opset=15, seed=13)
    x = b.conv(b.input("input", [1, 3, 6, 6]), 6)
    y = b.op("CastLike", [x, b.const(np.array(0.0, np.float32))])
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("CastLike_0") and group.prunable
    assert {e.port for e in group.ends if e.node == "CastLike_0"} == {IN(0), OUT(0)}
    assert_all_groups_oracle(model)


def test_unary_op_is_no_barrier_on_spatial_axes():
    """Unary ops couple whatever axes they are asked about (here: a Flatten'ed feature axis)."""
    b = GraphBuilder(seed=14)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 4)
    y = b.op("Tanh", [b.op("Flatten", [x], axis=1)])
    b.output(b.rename(b.gemm(y, 3), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 4
    tanh_in = next(e for e in group.ends if e.node == "Tanh_0" and e.port == IN(0))
    assert tanh_in.axes == (1,)
    assert_all_groups_oracle(model)
