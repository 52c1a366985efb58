"""com.microsoft DynamicQuantizeLSTM (opspecs/rnn.py): an LSTM with int8 W and R stored transposed; hidden units
and input features prune as an LSTM's, with per-gate-row scales and zero points.

Oracle: onnxruntime's kernel on the pruned model equals it on the original with the channels' codes at their zero
point; X and h are quantized at run time over a range that holds 0, so zeroed channels leave those scales alone.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from support.oracle import assert_all_groups_oracle

SEQ, BATCH, FEAT, INPUT, HIDDEN = 4, 2, 5, 6, 8
OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]


def _model(per_row: bool, bidirectional: bool = False):
    rng = np.random.default_rng(3)
    dirs = 2 if bidirectional else 1
    scale_shape = [dirs, 4 * HIDDEN] if per_row else [dirs]
    inits = {
        "w_in": (0.5 * rng.standard_normal((FEAT, INPUT))).astype(np.float32),
        "W": rng.integers(-100, 100, size=(dirs, INPUT, 4 * HIDDEN)).astype(np.int8),
        "R": rng.integers(-100, 100, size=(dirs, HIDDEN, 4 * HIDDEN)).astype(np.int8),
        "B": (0.1 * rng.standard_normal((dirs, 8 * HIDDEN))).astype(np.float32),
        "W_scale": rng.uniform(0.002, 0.01, size=scale_shape).astype(np.float32),
        "W_zp": np.zeros(scale_shape, np.int8),  # onnxruntime: "zero point must be zero"
        "R_scale": rng.uniform(0.002, 0.01, size=scale_shape).astype(np.float32),
        "R_zp": np.zeros(scale_shape, np.int8),
        "axes": np.array([1], np.int64), "shape": np.array([SEQ, BATCH, dirs * HIDDEN], np.int64),
        "w_out": (0.5 * rng.standard_normal((dirs * HIDDEN, 3))).astype(np.float32),
    }
    nodes = [helper.make_node("MatMul", ["x", "w_in"], ["feat"], name="proj"),
             helper.make_node("DynamicQuantizeLSTM", ["feat", "W", "R", "B", "", "", "", "", "W_scale", "W_zp",
                                                      "R_scale", "R_zp"], ["Y"], name="lstm", domain="com.microsoft",
                              hidden_size=HIDDEN, direction="bidirectional" if bidirectional else "forward"),
             helper.make_node("Transpose", ["Y"], ["Yt"], name="t", perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["Yt", "shape"], ["h"], name="flat"),
             helper.make_node("MatMul", ["h", "w_out"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "dqlstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [SEQ, BATCH, FEAT])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [SEQ, BATCH, 3])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=OPSETS)
    model.ir_version = 8
    return model


@pytest.mark.parametrize("per_row,bidirectional", [(False, False), (True, False), (False, True)],
                         ids=["per-direction", "per-gate-row", "bidirectional"])
def test_hidden_units_and_input_features_prune_exactly(per_row, bidirectional):
    dg = assert_all_groups_oracle(_model(per_row, bidirectional), min_groups=2)
    assert sorted(g.size for g in dg.prunable_groups()) == [INPUT, HIDDEN]
    hidden = next(g for g in dg.prunable_groups() if g.size == HIDDEN)
    scales = {e.tensor for e in hidden.ends if e.kind == "param" and e.tensor.endswith(("scale", "zp"))}
    assert scales == ({"W_scale", "W_zp", "R_scale", "R_zp"} if per_row else set())
