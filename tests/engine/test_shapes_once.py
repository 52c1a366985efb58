"""Shapes once: onnxruntime's symbolic inference (sympy, the slow part of analysis) runs at most once per
prune, on the declared dims; the stand-in sizes come from its dims evaluated there, and a model with static
inputs is observed instead (only what computes its holes runs). The shapes equal those a symbolic
inference at the stand-in sizes gives."""
from __future__ import annotations

import onnx
import pytest

from onnxprune import Pruner, shapes
from onnxprune.options import PruneOptions
from support.exported import by_name
from support.symbolic_runs import count_symbolic_runs


@pytest.fixture
def symbolic_runs(monkeypatch):
    monkeypatch.setattr(shapes, "_CACHE", {})  # analyse afresh: a cached analysis would hide the runs
    return count_symbolic_runs(monkeypatch)


@pytest.mark.parametrize("name", ["bert_ts", "tv_vit_dynamo", "tv_swin_ts"])
@pytest.mark.parametrize("options", [PruneOptions(ratio=0.5), PruneOptions(ratio=0.5, steps=2),
                                     PruneOptions(target_macs=0.6, steps=2)], ids=["ratio", "steps", "target"])
def test_symbolic_inference_runs_once_per_prune(symbolic_runs, options, name):
    """These compute Reshape targets at run time (onnx's inference leaves them open) and have dynamic
    dims: symbolic inference is needed, once, at load; the load-time passes (heads split apart, targets
    pinned: new tensors), the rounds and the target search carry the shapes from their plans."""
    pruner = Pruner.from_model(by_name(name).load())
    assert len(symbolic_runs) == 1
    before = pruner.macs()
    pruner.prune(options.with_(prune_hidden=True))
    assert pruner.macs() < before  # something was pruned (and its shapes updated)
    assert len(symbolic_runs) == 1, f"symbolic inference ran {len(symbolic_runs)} times"


def _static(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its dynamic input dims fixed in the file at their stand-in sizes."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    sizes = shapes.stand_ins(model, None)
    for vi in fixed.graph.input:
        if vi.name in sizes:
            for d, size in zip(vi.type.tensor_type.shape.dim, sizes[vi.name]):
                d.Clear()
                d.dim_value = size
    return fixed


def test_a_static_model_with_holes_is_observed_without_symbolic_inference(symbolic_runs):
    """vit_ts at a fixed batch: onnx's inference leaves the run-time Reshape targets open; running what
    computes them fills every hole with the shapes symbolic inference gives."""
    model = _static(by_name("vit_ts").load())
    found, _ = shapes.analysis_shapes(model)
    assert symbolic_runs == []
    assert shapes._holes(model, shapes._value_shapes(shapes._onnx_infer(model))), "no hole: nothing was tested"
    reference = _complete_shapes(shapes._infer(model)[0])
    assert symbolic_runs, "the reference is symbolic inference's"
    assert {n: found[n] for n in reference} == reference


def _complete_shapes(found: dict) -> dict:
    return {name: (elem, tuple(dims)) for name, (elem, dims) in found.items()
            if elem and dims is not None and all(isinstance(d, int) and d > 0 for d in dims)}


@pytest.mark.parametrize("name", ["bert_ts", "gpt2_dynamo", "vit_ts", "swin_dynamo", "llama_dynamo", "gcn_ts"])
def test_stand_in_dims_equal_a_symbolic_inference_at_the_stand_in_sizes(symbolic_runs, name):
    """The analysed dims (symbolic ones at their stand-ins) equal a second symbolic inference run at the
    stand-in sizes (what analysis did before), wherever that one gives a full shape; symbols stay symbols."""
    model = by_name(name).load()
    found, _ = shapes.analysis_shapes(model)
    assert len(symbolic_runs) <= 1
    sized = shapes._with_inputs(model, shapes.stand_ins(model, None))
    reference = _complete_shapes(shapes._infer(sized)[0])
    assert len(reference) > 10
    got = {n: (found[n][0], tuple(int(d) if d is not None else None for d in found[n][1]))
           for n in reference if n in found and found[n][1] is not None}
    assert got == {n: reference[n] for n in got}
    assert len(got) >= 0.95 * len(reference)
    assert any(shapes.is_symbolic(d) for _, dims in found.values() if dims for d in dims)


def _dims(graph):
    """Shapes with each symbolic dim as ("sym", stand-in): a full inference names its own symbols."""
    return {name: None if v.shape is None else tuple(("sym", int(d)) if shapes.is_symbolic(d) else d for d in v.shape)
            for name, v in graph.values.items() if name not in graph.params}


@pytest.mark.parametrize("name", ["tv_vit_dynamo", "tv_swin_ts"])
def test_tensors_the_load_time_passes_add_have_the_shapes_a_full_inference_gives(symbolic_runs, name):
    """The load-time passes add tensors (a ViT's heads split apart, a Swin's Reshape targets pinned): their
    dims come from onnx's inference at two sizes, symbolic ones named after carried dims that move alike."""
    from onnxprune import onnx_in
    model = by_name(name).load()
    pruner = Pruner.from_model(model)
    added = set(pruner.graph.values) - set(onnx_in.to_graph(model).values)
    assert added, "no tensor added: nothing was tested"
    assert len(symbolic_runs) == 1
    full = _dims(onnx_in.reinfer(pruner.graph))
    carried = _dims(pruner.graph)
    assert {n: carried[n] for n in added if n in full} == {n: full[n] for n in added if n in full}
    if name == "tv_vit_dynamo":  # the heads split apart keep the dynamic batch
        assert any(isinstance(d, tuple) for n in added for d in carried[n] or ())
    assert {n: s for n, s in carried.items() if n in full} == {n: s for n, s in full.items() if n in carried}
