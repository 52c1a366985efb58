"""Large weights in external data are mapped from their files, never read into protobuf.

The oracle: pruning the same model stored inline and stored with external data
gives the same pruned model (weights and outputs), through the API and the
CLI, and the input's data file is never written.
"""
import hashlib

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune import Pruner, onnx_in
from onnxprune.cli import main
from onnxprune.shapes import is_skeleton_weight
from support.architectures import resnet_basic
from support.oracle import run


def _save_both(tmp_path):
    model = resnet_basic()
    onnx.save(model, str(tmp_path / "inline.onnx"))
    external = onnx.ModelProto()
    external.CopyFrom(model)  # saving with external data empties the tensors of the model saved
    onnx.save_model(external, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    return model


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_large_external_weights_are_mapped_and_the_rest_read(tmp_path):
    model = _save_both(tmp_path)
    model_file = onnx_in.open_model(tmp_path / "ext.onnx")
    proto = model_file.load(map_weights=True)
    large = {t.name for t in model.graph.initializer
             if is_skeleton_weight(numpy_helper.to_array(t).dtype, int(np.prod(t.dims)))}
    assert large and set(model_file.mapped) == large
    for t in proto.graph.initializer:
        assert (t.data_location == onnx.TensorProto.EXTERNAL) == (t.name in large), t.name
    for t in model.graph.initializer:
        if t.name in large:
            assert isinstance(model_file.mapped[t.name], np.memmap)
            np.testing.assert_array_equal(model_file.mapped[t.name], numpy_helper.to_array(t))


def test_pruning_a_mapped_model_equals_pruning_it_inline(tmp_path):
    _save_both(tmp_path)
    before = _digest(tmp_path / "ext.onnx.data")
    results = []
    for name in ("inline", "ext"):
        pruner = Pruner.load(tmp_path / f"{name}.onnx")
        pruner.prune(ratio=0.5)
        pruner.validate(runs=0)  # the original runs from its file, weights mapped
        results.append(pruner.to_model())
    inline, mapped = ({t.name: numpy_helper.to_array(t) for t in m.graph.initializer} for m in results)
    assert inline.keys() == mapped.keys()
    for name in inline:
        np.testing.assert_array_equal(mapped[name], inline[name])
    feeds = Pruner.load(tmp_path / "inline.onnx").feeds(seed=1)
    for a, b in zip(run(results[0], feeds), run(results[1], feeds)):
        np.testing.assert_array_equal(a, b)
    assert _digest(tmp_path / "ext.onnx.data") == before


def test_the_cli_prunes_and_recovers_a_mapped_model_without_touching_its_data(tmp_path, capsys):
    model = _save_both(tmp_path)
    before = _digest(tmp_path / "ext.onnx.data")
    x = np.random.default_rng(0).standard_normal([16] + [d.dim_value or 1 for d in
                                                         model.graph.input[0].type.tensor_type.shape.dim][1:])
    np.savez(tmp_path / "calib.npz", **{model.graph.input[0].name: x.astype(np.float32)})
    for name in ("inline", "ext"):
        code = main([str(tmp_path / f"{name}.onnx"), str(tmp_path / f"{name}.pruned.onnx"), "--ratio", "0.5",
                     "--calib", str(tmp_path / "calib.npz"), "--criterion", "l2", "--recover", "--runs", "0", "-q"])
        assert code == 0, capsys.readouterr().err
    a, b = (onnx.load(str(tmp_path / f"{name}.pruned.onnx")) for name in ("inline", "ext"))
    for ta, tb in zip(a.graph.initializer, b.graph.initializer):
        np.testing.assert_allclose(numpy_helper.to_array(tb), numpy_helper.to_array(ta), rtol=1e-5, atol=1e-6)
    assert _digest(tmp_path / "ext.onnx.data") == before


def test_scoring_gives_a_mapped_weights_pages_back_after_reading_it(tmp_path, monkeypatch):
    """Released before the norms read it, a mapped weight's pages come back and stay: every weight
    of a 1B-parameter model was resident during scoring. Each release must follow the read."""
    from onnxprune import importance, weights
    _save_both(tmp_path)
    events = []
    real_norms, real_release = importance._row_norms, weights.release

    def norms(value, axes, power):
        events.append(("read", value.shape))
        return real_norms(value, axes, power)

    def release(array):
        if isinstance(array, np.memmap):
            events.append(("release", array.shape))
        real_release(array)

    monkeypatch.setattr(importance, "_row_norms", norms)
    monkeypatch.setattr(importance.weights, "release", release)
    pruner = Pruner.load(tmp_path / "ext.onnx")
    pruner.plan()
    reads = [k for k, e in enumerate(events) if e[0] == "read"]
    releases = [k for k, e in enumerate(events) if e[0] == "release"]
    assert reads and releases
    for k in releases:  # each release of a mapped weight comes right after its read
        assert events[k - 1] == ("read", events[k][1])
