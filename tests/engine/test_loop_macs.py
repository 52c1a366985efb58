"""MACs inside a loop count once per trip where the model fixes the trip count (Loop's constant M, Scan's
scanned length): a Loop of three conv steps counts as the same three convs written out one after another."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune import Pruner

OPSET = [helper.make_opsetid("", 17)]
C, S = 4, 6


def _weight(seed=0):
    return np.random.default_rng(seed).standard_normal((C, C, 3, 3)).astype(np.float32) * 0.2


def _conv_body(x, y):
    conv = helper.make_node("Conv", [x, "w"], [y], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    return conv, [numpy_helper.from_array(_weight(), "w")]


def _model(nodes, inputs, outputs, inits=()):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)), opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _loop(trips, m_as_input=False):
    conv, inits = _conv_body("x_in", "x_out")
    body = helper.make_graph(
        [conv, helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1, C, S, S])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1, C, S, S])], inits)
    outer = [] if m_as_input else [numpy_helper.from_array(np.array(trips, np.int64), "M")]
    outer.append(numpy_helper.from_array(np.array(True), "cond"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, S, S])]
    if m_as_input:
        inputs.append(helper.make_tensor_value_info("M", TensorProto.INT64, []))
    loop = helper.make_node("Loop", ["M", "cond", "x"], ["y"], body=body)
    return _model([loop], inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, S, S])], outer)


def _scan(frames, symbolic=False):
    conv, inits = _conv_body("frame", "out")
    body = helper.make_graph([conv], "body", [helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, C, S, S])],
                             [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, C, S, S])], inits)
    length = "T" if symbolic else frames
    scan = helper.make_node("Scan", ["x"], ["y"], body=body, num_scan_inputs=1)
    return _model([scan], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [length, 1, C, S, S])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [length, 1, C, S, S])])


def _unrolled(steps):
    """The same convs written out: ``steps`` of them, one after another, in the main graph."""
    nodes = [helper.make_node("Conv", [f"x{k}", "w"], [f"x{k + 1}"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
             for k in range(steps)]
    nodes[-1].output[0] = "y"
    nodes[0].input[0] = "x"
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, S, S])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, S, S])],
                  [numpy_helper.from_array(_weight(), "w")])


def test_a_loop_with_a_constant_trip_count_counts_its_body_that_many_times():
    one = Pruner.from_model(_unrolled(1)).macs()
    assert one == C * C * 9 * S * S
    for trips in (1, 3, 5):
        assert Pruner.from_model(_loop(trips)).macs() == Pruner.from_model(_unrolled(trips)).macs() == trips * one


def test_a_loop_whose_trip_count_is_an_input_counts_its_body_once():
    assert Pruner.from_model(_loop(3, m_as_input=True)).macs() == Pruner.from_model(_unrolled(1)).macs()


def test_a_scan_counts_its_body_once_per_frame_where_the_length_is_static():
    one = Pruner.from_model(_unrolled(1)).macs()
    assert Pruner.from_model(_scan(4)).macs() == 4 * one
    assert Pruner.from_model(_scan(4, symbolic=True)).macs() == one  # a sequence length: not known
