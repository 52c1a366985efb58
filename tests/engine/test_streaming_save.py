"""The pruned model written by streaming each weight from its array (onnx_out.write_graph) is the model
the in-memory path (onnx_out.to_model) gives: the same tensors byte for byte, the same everything else,
inline or as external data, on every test architecture and on exported transformers."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune import Pruner, onnx_out
from onnxprune.options import PruneOptions
from support.architectures import ARCHITECTURES
from support.exported import MODELS_DIR

TRANSFORMERS = ("llama_ts", "bert_ts", "vit_dynamo", "gpt2_dynamo")


def _pruned(name: str) -> Pruner:
    if name in ARCHITECTURES:
        return Pruner.from_model(ARCHITECTURES[name]())
    return Pruner.load(f"{MODELS_DIR}/{name}.onnx")


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.ClearField("initializer")
    return copy


@pytest.mark.parametrize("name", [*ARCHITECTURES, *TRANSFORMERS])
def test_streamed_model_equals_the_in_memory_one(name, tmp_path):
    pruner = _pruned(name)
    pruner.prune(PruneOptions(ratio=0.5, round_to=1, prune_hidden=name in TRANSFORMERS))
    expected = pruner.to_model()
    for external in (False, True):
        path = tmp_path / f"{name}_{external}.onnx"
        onnx_out.write_graph(pruner.output_graph(), path, external)
        assert (tmp_path / f"{path.name}.data").exists() == external
        written = onnx.load(str(path))
        assert [t.name for t in written.graph.initializer] == [t.name for t in expected.graph.initializer]
        for got, want in zip(written.graph.initializer, expected.graph.initializer):
            a, b = numpy_helper.to_array(got), numpy_helper.to_array(want)
            assert (a.dtype, a.shape) == (b.dtype, b.shape), got.name
            assert a.tobytes() == b.tobytes(), got.name
        assert _without_initializers(written) == _without_initializers(expected)
        onnx.checker.check_model(str(path), full_check=True)


def test_external_offsets_are_aligned_and_zero_blocks_are_holes(tmp_path):
    """Offsets are multiples of DATA_ALIGNMENT (onnxruntime maps such data); zeros read back as zeros."""
    pruner = Pruner.from_model(ARCHITECTURES["resnet_basic"]())
    graph = pruner.output_graph()
    large = onnx_out.left_out_weights(graph)
    graph.params[large[0]] = np.zeros_like(graph.params[large[0]])
    onnx_out.write_graph(graph, tmp_path / "m.onnx", external_data=True)
    model = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    offsets = [int({e.key: e.value for e in t.external_data}["offset"]) for t in model.graph.initializer
               if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(offsets) == len(large) and all(o % onnx_out.DATA_ALIGNMENT == 0 for o in offsets)
    loaded = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    assert not loaded[large[0]].any()
    for name in large[1:]:
        np.testing.assert_array_equal(loaded[name], graph.params[name])
