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


@pytest.fixture
def symbolic_runs(monkeypatch):
    calls = []
    real = shapes._ort_infer

    def counting(model):
        calls.append(model)
        return real(model)

    monkeypatch.setattr(shapes, "_ort_infer", counting)
    monkeypatch.setattr(shapes, "_CACHE", {})  # analyse afresh: a cached analysis would hide the runs
    return calls


@pytest.mark.parametrize("options", [PruneOptions(ratio=0.5), PruneOptions(ratio=0.5, steps=2),
                                     PruneOptions(target_macs=0.6, steps=2)], ids=["ratio", "steps", "target"])
def test_symbolic_inference_runs_once_per_prune(symbolic_runs, options):
    """bert_ts computes its Reshape targets at run time (onnx's inference leaves them open) and has
    dynamic batch and sequence: symbolic inference is needed, once, at load; the rounds and the target
    search carry the shapes from their plans."""
    pruner = Pruner.from_model(by_name("bert_ts").load())
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
