"""LSTM, GRU and RNN rules (opspecs/rnn.py): hidden units across gate blocks, directions and states.

The oracle: removing hidden units equals zeroing their rows in W, R, B (and
P), their column of R and their initial-state slots; a zeroed unit stays 0 at
every step, so the network's outputs are the same.
"""
import numpy as np
import onnx
import pytest

from onnxprune.depgraph import EndKind
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, assert_group_oracle, depgraph, prune_channels, random_feeds, run
from support.protos import node as _node

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
SEQ, BATCH, IN, HIDDEN = 5, 2, 6, 7


def rnn_model(op="LSTM", direction="forward", peepholes=False, initial="const", layout=0, opset=17, **attrs):
    """x -> MatMul (features IN) -> op(hidden HIDDEN) -> Y read as [.., dirs*H] by MatMul, Y_h by Gemm."""
    b = GraphBuilder(opset=opset, seed=3)
    dirs = 2 if direction == "bidirectional" else 1
    gates = GATES[op]
    x_shape = [BATCH, SEQ, 4] if layout else [SEQ, BATCH, 4]
    x = b.op("MatMul", [b.input("x", x_shape), b.param([4, IN])])
    inputs = [x, b.param([dirs, gates * HIDDEN, IN]), b.param([dirs, gates * HIDDEN, HIDDEN]),
              b.param([dirs, 2 * gates * HIDDEN], scale=0.3)]
    state_shape = [BATCH, dirs, HIDDEN] if layout else [dirs, BATCH, HIDDEN]
    if initial == "const":
        states = [b.param(state_shape)] * (2 if op == "LSTM" else 1)
        states = [b.param(state_shape) for _ in states]
    elif initial == "zeros":  # torch style: a zero ConstantOfShape sliced per layer
        zeros = b.op("ConstantOfShape", [b.const(np.asarray(state_shape, dtype=np.int64))],
                     value=onnx.helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [0.0]))
        states = [b.op("Identity", [zeros])] * (2 if op == "LSTM" else 1)
    else:
        states = []
    inputs += [""] + states
    if peepholes:
        inputs += [""] * (7 - len(inputs)) + [b.param([dirs, 3 * HIDDEN])]
    n_out = 3 if op == "LSTM" else 2
    outs = b.op(op, inputs, n_out=n_out, hidden_size=HIDDEN, direction=direction, layout=layout, **attrs)
    y, y_h = outs[0], outs[1]
    if layout:  # Y [batch, seq, dirs, H]
        y = b.op("Reshape", [y, b.const(np.asarray([BATCH, SEQ, dirs * HIDDEN], dtype=np.int64))])
        y_h = b.op("Reshape", [y_h, b.const(np.asarray([BATCH, dirs * HIDDEN], dtype=np.int64))])
    else:  # Y [seq, dirs, batch, H]
        y = b.op("Transpose", [y], perm=[0, 2, 1, 3])
        y = b.op("Reshape", [y, b.const(np.asarray([SEQ, BATCH, dirs * HIDDEN], dtype=np.int64))])
        y_h = b.op("Transpose", [y_h], perm=[1, 0, 2])
        y_h = b.op("Reshape", [y_h, b.const(np.asarray([BATCH, dirs * HIDDEN], dtype=np.int64))])
    b.output(b.rename(b.op("MatMul", [y, b.param([dirs * HIDDEN, 3])]), "tags"))
    b.output(b.rename(b.gemm(y_h, 2), "sentence"))
    return b.build()


CASES = [
    ("LSTM", "forward", {}), ("LSTM", "bidirectional", {}), ("LSTM", "reverse", {}),
    ("GRU", "forward", {"linear_before_reset": 0}), ("GRU", "forward", {"linear_before_reset": 1}),
    ("GRU", "bidirectional", {"linear_before_reset": 1}), ("RNN", "forward", {}), ("RNN", "bidirectional", {}),
]


@pytest.mark.parametrize("op,direction,attrs", CASES, ids=[f"{o}-{d}-{a}" for o, d, a in CASES])
@pytest.mark.parametrize("initial", ["const", "zeros", "none"])
def test_hidden_units_oracle(op, direction, attrs, initial):
    model = rnn_model(op, direction, initial=initial, **attrs)
    dg = assert_all_groups_oracle(model, min_groups=2)
    hidden = dg.group_of(f"{op}_0")
    assert hidden.size == HIDDEN and hidden.prunable
    params = {e.tensor: e.axes for e in hidden.ends if e.kind == EndKind.PARAM}
    node = _node(model, f"{op}_0")
    assert params[node.input[1]] == (1,) and params[node.input[3]] == (1,)
    assert dg.group_of("MatMul_0").prunable  # input size follows the producer


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_pruned_node_shapes_and_attribute(op):
    model = rnn_model(op, "bidirectional", initial="zeros")
    dg = depgraph(model)
    group = dg.group_of(f"{op}_0")
    pruned = prune_channels(dg, group, [0, 3, 6])
    node = _node(pruned, f"{op}_0")
    assert onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "hidden_size")) == 4
    inits = {t.name: t for t in pruned.graph.initializer}
    w, r, bias = (onnx.numpy_helper.to_array(inits[n]) for n in node.input[1:4])
    gates = GATES[op]
    assert w.shape == (2, gates * 4, IN) and r.shape == (2, gates * 4, 4) and bias.shape == (2, 2 * gates * 4)
    assert len(node.input) <= 5  # the zero initial states were dropped: omitted means zero
    weights = {t.name: t for t in model.graph.initializer}
    original = onnx.numpy_helper.to_array(weights[_node(model, f"{op}_0").input[1]])
    kept = [1, 2, 4, 5]
    expected_rows = [g * HIDDEN + j for g in range(gates) for j in kept]
    np.testing.assert_array_equal(w, original[:, expected_rows, :])


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_peepholes(direction):
    model = rnn_model("LSTM", direction, peepholes=True)
    dg = assert_all_groups_oracle(model, min_groups=2)
    group = dg.group_of("LSTM_0")
    node = _node(model, "LSTM_0")
    assert any(e.tensor == node.input[7] and e.axes == (1,) for e in group.ends)


def test_batch_first_layout_structure():
    """layout=1 (onnxruntime's CPU kernels refuse it, so structure only): states are [batch, dirs, H]."""
    model = rnn_model("LSTM", "bidirectional", layout=1, opset=14)
    dg = depgraph(model)
    group = dg.group_of("LSTM_0")
    assert group.prunable and group.size == HIDDEN
    node = _node(model, "LSTM_0")
    axes = {e.tensor: e.axes for e in group.ends}
    assert axes[node.output[0]] == (2, 3) and axes[node.input[5]] == (2,)
    pruned = prune_channels(dg, group, [0, 1])
    assert onnx.shape_inference.infer_shapes(pruned, strict_mode=True)


def test_pruned_runs_and_matches_with_removed_units_zeroed():
    """Zeroed units really are silent: pruning them changes nothing when they were already zero."""
    model = rnn_model("GRU", "bidirectional", initial="zeros", linear_before_reset=1)
    dg = depgraph(model)
    group = dg.group_of("GRU_0")
    feeds = random_feeds(model)
    assert_group_oracle(dg, group, [1, 2, 3, 4, 5, 6], feeds)
    pruned = prune_channels(dg, group, [1, 2, 3, 4, 5, 6])
    assert [o.shape for o in run(pruned, feeds)] == [o.shape for o in run(model, feeds)]


def test_sequence_and_batch_axes_do_not_prune():
    model = rnn_model("LSTM", "forward")
    dg = depgraph(model)
    from onnxprune.rules import IN as IN_PORT, OUT
    from onnxprune.opspecs.rnn import couple
    view = dg.view("LSTM_0")
    assert not isinstance(couple(view, IN_PORT(0), (0,)), list)
    assert not isinstance(couple(view, OUT(0), (0,)), list)
    assert not isinstance(couple(view, OUT(1), (1,)), list)
