"""Self-check: every test architecture is a valid ONNX model that runs in onnxruntime."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from support.architectures import ARCHITECTURES
from support.builder import GraphBuilder


def _dims(vi):
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_builds_and_runs(name):
    model = ARCHITECTURES[name]()
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(_dims(model.graph.input[0])).astype(np.float32)
    outs = sess.run(None, {"input": x})
    assert len(outs) == len(model.graph.output) >= 1
    for vi, y in zip(model.graph.output, outs):
        assert list(y.shape) == _dims(vi), vi.name
        assert np.isfinite(y).all() and 1e-3 < float(np.std(y)) < 1e3, vi.name


def test_builder_is_deterministic_and_channels_differ():
    a, b = ARCHITECTURES["plain_cnn"](), ARCHITECTURES["plain_cnn"]()
    assert a.SerializeToString() == b.SerializeToString()
    g = GraphBuilder(seed=0)
    x = g.input("input", [1, 3, 8, 8])
    y = g.conv(x, 4)
    assert g.shape_of(y) == [1, 4, 8, 8]
    g.output(g.rename(g.relu(y), "out"))
    m = g.build()
    w = onnx.numpy_helper.to_array(m.graph.initializer[0])
    assert w.shape == (4, 3, 3, 3) and len({w[i].tobytes() for i in range(4)}) == 4
    assert m.graph.output[0].name == "out" and _dims(m.graph.output[0]) == [1, 4, 8, 8]
