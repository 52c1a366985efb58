"""onnxruntime sessions made from a graph read its large weights in place, with the same results."""
import gc

import numpy as np
from onnx import numpy_helper

from onnxprune import Pruner, onnx_out
from onnxprune.shapes import SKELETON_MIN_ELEMENTS
from onnxprune.validate import session
from support.architectures import mobilenetv2, resnet_basic


def test_a_session_from_a_graph_runs_like_one_from_its_model_without_copying_weights(monkeypatch):
    pruner = Pruner.from_model(resnet_basic())
    pruner.prune(ratio=0.3)
    graph = pruner.graph
    feeds = pruner.feeds(seed=3)
    expected = session(pruner.to_model()).run(None, feeds)
    converted = []
    real = numpy_helper.from_array
    monkeypatch.setattr(numpy_helper, "from_array", lambda arr, name=None: converted.append(arr.size) or real(arr, name))
    in_place = session(graph)
    assert onnx_out.left_out_weights(graph)
    assert not [size for size in converted if size >= SKELETON_MIN_ELEMENTS]
    gc.collect()  # the arrays onnxruntime reads must outlive any temporary of session()
    for e, a in zip(expected, in_place.run(None, feeds)):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)


def test_the_checker_on_a_skeleton_still_finds_a_broken_weight():
    import onnx
    import pytest
    from onnxprune.onnx_in import run_checker
    model = mobilenetv2()
    big = next(t for t in model.graph.initializer if np.prod(t.dims) >= SKELETON_MIN_ELEMENTS)
    big.float_data.append(1.0)  # raw_data and float_data both set: invalid
    with pytest.raises(onnx.checker.ValidationError):
        run_checker(model)
