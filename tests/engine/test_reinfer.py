"""Shapes after a rewrite come from inference on a skeleton, not from a round trip of the weights."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune import Pruner, onnx_in, onnx_out
from onnxprune.shapes import SKELETON_MIN_ELEMENTS
from support.architectures import mobilenetv2, resnet_basic
from support.exported import exported_models

GPT2 = next(m for m in exported_models() if m.name == "gpt2_dynamo")


def _shapes(graph):
    return {name: (v.dtype, v.shape) for name, v in graph.values.items() if name not in graph.params}


@pytest.mark.parametrize("make", [resnet_basic, mobilenetv2, GPT2.load], ids=["resnet", "mobilenetv2", "gpt2"])
def test_reinfer_gives_the_shapes_a_full_round_trip_gives(make):
    pruner = Pruner.from_model(make())
    pruner.prune(ratio=0.5)
    pruned = pruner.graph
    full = onnx_in.to_graph(onnx_out.to_model(pruned))
    again = onnx_in.reinfer(pruned)
    assert _shapes(again) == _shapes(full)
    assert again.params is pruned.params and again.nodes is pruned.nodes  # the IR's own weights, not copies


def _dims(graph):
    """Shapes with each symbolic dim as ("sym", stand-in): symbols inference invents (Flatten_73_o0__d1)
    are named after node positions, which differ between a model and its skeleton."""
    from onnxprune.shapes import is_symbolic
    return {name: (dtype, None if shape is None else tuple(("sym", int(d)) if is_symbolic(d) else d for d in shape))
            for name, (dtype, shape) in _shapes(graph).items()}


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "gpt2_dynamo", "bert_ts", "swin_dynamo", "vit_ts", "llama_dynamo"])
def test_shapes_carried_through_a_prune_equal_a_full_inference(name):
    """Symbolic inference runs once, at load: the shapes a prune carries (checked by onnx's fast
    inference) are the ones a full symbolic inference of the pruned model gives."""
    makers = {"resnet": resnet_basic, "mobilenetv2": mobilenetv2}
    make = makers.get(name) or next(m for m in exported_models() if m.name == name).load
    pruner = Pruner.from_model(make())
    for step in range(2):
        pruner.prune(ratio=0.3, prune_hidden=True)
        full = onnx_in.reinfer(pruner.graph)
        assert _dims(pruner.graph) == _dims(full), f"round {step + 1}"


def test_a_carried_shape_that_disagrees_falls_back_to_full_inference(monkeypatch):
    pruner = Pruner.from_model(resnet_basic())
    graph = pruner.graph
    name = next(n.outputs[0] for n in graph.nodes if n.op_type == "Conv")
    value = graph.values[name]
    wrong = dict(graph.values)
    wrong[name] = type(value)(name, value.dtype, (value.shape[0], value.shape[1] + 1) + tuple(value.shape[2:]))
    calls = []
    monkeypatch.setattr(onnx_in, "reinfer", lambda g, s=None: calls.append(g) or g)
    onnx_in.refresh(__import__("dataclasses").replace(graph, values=wrong))
    assert len(calls) == 1


def test_pruning_never_copies_a_large_weight_to_protobuf_before_saving(monkeypatch):
    pruner = Pruner.from_model(resnet_basic())
    converted = []
    real = numpy_helper.from_array
    monkeypatch.setattr(numpy_helper, "from_array", lambda arr, name=None: converted.append((arr.dtype.kind, arr.size)) or real(arr, name))
    pruner.prune(ratio=0.5)
    assert converted  # small constants go in the skeleton
    assert not [c for c in converted if c[0] in "fc" and c[1] >= SKELETON_MIN_ELEMENTS]
    converted.clear()
    pruner.to_model()
    assert [c for c in converted if c[1] >= SKELETON_MIN_ELEMENTS]  # the one trip, at save


def test_a_skeleton_declares_left_out_weights_as_typed_inputs():
    graph = Pruner.from_model(resnet_basic()).graph
    skeleton = onnx_out.to_model(graph, onnx_out.Weights.INPUTS)
    inputs = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in skeleton.graph.input}
    for name in onnx_out.skeleton_weights(graph):
        assert inputs[name] == list(graph.params[name].shape)
    kept = {t.name for t in skeleton.graph.initializer}
    assert kept and all(np.asarray(graph.params[n]).size < SKELETON_MIN_ELEMENTS or graph.params[n].dtype.kind not in "fc"
                        for n in kept)


@pytest.mark.parametrize("make", [resnet_basic, GPT2.load], ids=["resnet", "gpt2"])
@pytest.mark.parametrize("weights_as_inputs", [False, True], ids=["modern", "initializers-listed-as-inputs"])
def test_analysis_on_a_skeleton_gives_the_shapes_of_the_whole_model(make, weights_as_inputs):
    from onnx import helper
    from onnxprune import shapes
    model = onnx.ModelProto()
    model.CopyFrom(make())  # loaders may hand out a shared model: never change it
    if weights_as_inputs:  # old exporters list every initializer as a graph input too
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                                 for t in model.graph.initializer)
    skeleton, left_out = shapes.skeleton(model)
    assert left_out and len(skeleton.graph.initializer) < len(model.graph.initializer)
    whole, known_whole = shapes._analysis_shapes(model, None)
    got, known = shapes.analysis_shapes(model, None)
    assert got == whole and set(known) == set(known_whole)
