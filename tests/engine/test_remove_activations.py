"""UPDP-style activation removal (onnxprune/passes/remove_activations.py): removing an
activation equals the original with it replaced by Identity (onnxruntime judges), the layers
around it then merge exactly, the greedy choice takes the activation that changes the
outputs least, and recovery re-fits the merged layer without making held-out fidelity worse."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.api import Pruner
from onnxprune.calibration import CalibrationSet
from onnxprune.errors import PlanError
from onnxprune.passes.remove_activations import candidates
from onnxprune.recipe import Recipe
from onnxprune.registry import builtin_registry
from onnxprune.validate import check
from onnxprune import onnx_in
from support.builder import GraphBuilder
from support.fusion import assert_exact, ops
from support.oracle import random_feeds, run


def _chain(seed: int = 3):
    """conv3x3 -> BN -> relu(A) -> conv1x1 -> relu(B) -> conv3x3 (unpadded) -> relu -> pool -> gemm.

    A's input is mostly above zero (a BN shift of two deviations): removing A changes little; B's
    input is centred: removing B changes much."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", [1, 3, 10, 10])
    h = b.conv(x, 16, k=3, pad=1)
    c = 16
    gamma = b.param(np.full(c, 0.5, np.float32))
    beta = b.param(np.full(c, 1.0, np.float32))
    mean, var = b.param(np.zeros(c, np.float32)), b.param(np.ones(c, np.float32))
    h = b.op("BatchNormalization", [h, gamma, beta, mean, var], epsilon=1e-5)
    a = b.relu(h)
    h = b.relu(b.conv(a, 8, k=1, pad=0))
    h = b.relu(b.conv(h, 2, k=3, pad=0))
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [h])], axis=1), 5)
    b.output(b.rename(y, "y"))
    return b.build()


def _relus(model) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Relu"]


def _as_identity(model, name):
    """The original with activation ``name`` replaced by Identity."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    node = next(n for n in edited.graph.node if n.name == name)
    node.op_type = "Identity"
    del node.attribute[:]
    return edited


def _calib(model, n=48, seed=1) -> CalibrationSet:
    return Pruner.from_model(model).random_inputs(n, seed)


def test_candidates_are_activations_whose_layers_would_merge():
    model = _chain()
    found, refused = candidates(onnx_in.from_model(model), builtin_registry())
    first, second, third = _relus(model)
    assert [c.node for c in found] == [second]  # A sits after a BN (fused first by the API), the last before a pool
    pruner = Pruner.from_model(model)
    pruner.fuse()
    found, refused = candidates(pruner.graph, pruner.registry)
    assert [c.node for c in found] == [first, second] and not refused


@pytest.mark.parametrize("which", [0, 1])
def test_removal_equals_the_activation_replaced_by_identity_and_the_merge_is_exact(which):
    model = _chain()
    name = _relus(model)[which]
    pruner = Pruner.from_model(model)
    pruner.fuse()
    layers = ops(pruner.to_model()).count("Conv")
    pruner.remove_activation_nodes([name])
    removed = pruner.to_model()
    check(removed)
    assert name not in [n.name for n in removed.graph.node]
    expected = _as_identity(model, name)
    assert_exact(expected, removed, rtol=1e-4, atol=1e-4)
    assert any(not np.allclose(a, b, atol=1e-5) for a, b in zip(run(model, random_feeds(model)),
                                                                run(removed, random_feeds(model))))
    result = pruner.fuse()
    merged = pruner.to_model()
    assert ops(merged).count("Conv") == layers - 1, result.refused
    assert_exact(expected, merged, rtol=1e-4, atol=1e-4)
    out = next(n.output[0] for n in model.graph.node if n.input and n.input[0] == name)  # the second layer's
    assert pruner.edits.tensors[out] == out and out in pruner.edits.changed  # it stands for the original's


def test_a_padded_pair_is_refused_with_its_reason():
    b = GraphBuilder(seed=5)
    x = b.input("x", [1, 3, 8, 8])
    b.output(b.rename(b.conv(b.relu(b.conv(x, 8, k=3, pad=1)), 4, k=3, pad=1), "y"))
    found, refused = candidates(onnx_in.from_model(b.build()), builtin_registry())
    assert not found and "pads its input" in next(iter(refused.values()))


def test_greedy_choice_removes_the_activation_that_changes_the_outputs_least():
    model = _chain()
    pruner = Pruner.from_model(model)
    done = pruner.remove_activations(1, _calib(model))
    (record,) = done["removed"]
    first, second, _ = _relus(model)
    assert record["node"] == first and done["candidates"] == 2 and record["output_change"] < 0.05
    assert done["merged"] == 1 and not done["refused"]
    fused = pruner.to_model()
    assert ops(fused).count("Conv") == 2 and ops(fused).count("Relu") == 2
    assert_exact(_as_identity(model, first), fused, rtol=1e-4, atol=1e-4)
    again = Pruner.from_model(model)  # the saved plan re-applies
    Recipe.from_json(pruner.recipe.to_json()).replay(again)
    assert_exact(fused, again.to_model(), rtol=1e-6, atol=1e-6)


def test_a_fraction_of_the_candidates_and_a_node_that_is_none():
    model = _chain()
    pruner = Pruner.from_model(model)
    assert len(pruner.remove_activations(0.5, _calib(model))["removed"]) == 1
    with pytest.raises(PlanError, match="no activation between two linear layers"):
        Pruner.from_model(model).remove_activation_nodes(["Conv_0"])


def test_recovery_refits_the_merged_layer_without_making_held_out_fidelity_worse():
    model = _chain(seed=7)
    data = _calib(model, n=96)
    pruner = Pruner.from_model(model)
    pruner.remove_activations(2, data)
    assert ops(pruner.to_model()).count("Conv") == 1
    assert data.n_samples == 96 and not data.whole
    result = pruner.recover(data, refit_shifted=False)
    before, after = (max(o.rel_l2 for o in f.outputs) for f in (result.fidelity_before, result.fidelity_after))
    assert result.kept and after < before, (before, after)
    assert next(p["changed"] for p in result.passes if p["name"] == "least-squares refit") == 1  # the merged layer
