"""Depth pruning end to end: scores pick the right block, --depth composes with width pruning on
every test architecture, recovery follows the edit map after removed blocks, plans re-apply."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune import Pruner
from onnxprune.calibration import CalibrationSet
from onnxprune.options import PruneOptions, RecoveryOptions
from onnxprune.passes.bn_stats import ReestimateBatchNorm
from onnxprune.passes.lstsq import LeastSquaresRefit
from onnxprune.recipe import Recipe
from support.architectures import ARCHITECTURES
from support.oracle import random_feeds, run


def _calib(model: onnx.ModelProto, n: int = 40, seed: int = 1) -> CalibrationSet:
    return Pruner.from_model(model).random_inputs(n, seed)


def _shrink_branch(model: onnx.ModelProto, join: str, factor: float) -> onnx.ModelProto:
    """Scale the last BatchNorm of the branch ending at ``join`` (gamma and beta) by ``factor``."""
    from onnxprune import onnx_in
    from onnxprune.blocks import find_blocks
    from onnxprune.registry import builtin_registry
    graph = onnx_in.from_model(model)
    block = next(b for b in find_blocks(graph, builtin_registry()).blocks if b.join == join)
    bn = graph.producers[block.residual][0]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in bn.inputs[1:3]:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    return out


@pytest.mark.parametrize("score", ["weights", "influence", "output"])
def test_every_score_removes_the_branch_that_adds_least(score):
    model = _shrink_branch(ARCHITECTURES["resnet_basic"](), "Add_1", 0.01)
    pruner = Pruner.from_model(model)
    data = _calib(model) if score != "weights" else None
    (removed,) = pruner.remove_blocks(1, data=data, score=score)
    assert removed["join"] == "Add_1" and removed["score_by"] == score and pruner.removed_blocks == [removed]
    # the second weakest under another shrink goes first instead
    model = _shrink_branch(ARCHITECTURES["resnet_basic"](), "Add_3", 0.01)
    (removed,) = Pruner.from_model(model).remove_blocks(1, data=_calib(model) if data else None, score=score)
    assert removed["join"] == "Add_3"


def test_scores_with_data_are_reported_together_and_output_is_the_default():
    model = ARCHITECTURES["mobilenetv2"]()
    removed = Pruner.from_model(model).remove_blocks(1, data=_calib(model))
    assert removed[0]["score_by"] == "output"
    assert set(removed[0]["scores"]) == {"weights", "influence", "output"}
    assert 0 < removed[0]["macs_share"] < 1 and 0 < removed[0]["params_share"] < 1


def test_edit_map_of_a_removed_block_and_what_recovery_touches():
    model = ARCHITECTURES["resnet_basic"]()
    pruner = Pruner.from_model(model)
    block = next(b for b in pruner.blocks().blocks if b.join == "Add_1")
    pruner.remove_block_keys([block.key])
    edits = pruner.edits
    assert edits.tensors[block.output] is None and all(edits.nodes[n] is None for n in block.nodes)
    assert edits.nodes[block.join] is None and edits.tensors[block.skip] == block.skip
    assert "output" in edits.changed and block.skip not in edits.changed
    graph, original = pruner.graph, pruner.original_graph
    # the relu after the join now reads the skip: the next layers (next block's conv and projection) re-fit
    relu = next(n for n in graph.nodes if block.skip in n.inputs and n.op_type == "Relu")
    after = {c.name for c, _ in graph.consumers[relu.outputs[0]] if c.op_type == "Conv"}
    data = _calib(model)
    lstsq = LeastSquaresRefit(original, data, edits, pruner.registry, RecoveryOptions(refit_shifted=False))
    assert set(lstsq.targets(graph)) == after and len(after) == 2
    # with shifted layers too: also every layer reading a value the removal changed, and only those
    shifted = LeastSquaresRefit(original, data, edits, pruner.registry).targets(graph)
    layers = {n.name: n for n in graph.nodes if n.op_type in ("Conv", "Gemm")}
    assert set(shifted) == after | {name for name, n in layers.items() if n.inputs[0] in edits.changed}
    # every BatchNorm after the removed block reads a changed tensor: plain re-estimation touches them
    bns = [n for n in graph.nodes if n.op_type == "BatchNormalization" and n.inputs[0] in edits.changed]
    assert bns and ReestimateBatchNorm(data, edits, pruner.registry).run(graph).changed == len(bns)


def test_least_squares_after_removal_brings_the_outputs_back():
    model = ARCHITECTURES["mobilenetv2"]()
    pruner = Pruner.from_model(model)
    pruner.remove_blocks(1)
    data = _calib(model, 60)
    result = pruner.recover(data, methods=("lstsq",), undo_if_worse=False)
    before, after = result.fidelity_before.outputs[0], result.fidelity_after.outputs[0]
    assert result.passes[0]["changed"] >= 1
    assert after.rel_l2 < 0.5 * before.rel_l2, (before, after)


@pytest.mark.parametrize("name", ["resnet_basic", "resnet_bottleneck", "mobilenetv2", "yolo_neck"])
def test_recovery_after_depth_is_no_worse_on_held_out_data(name):
    model = ARCHITECTURES[name]()
    pruner = Pruner.from_model(model)
    pruner.prune(PruneOptions(depth=1, ratio=0.0))
    result = pruner.recover(_calib(model, 50))
    assert result.kept
    assert result.fidelity_after.outputs[0].rel_l2 <= result.fidelity_before.outputs[0].rel_l2


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_depth_and_ratio_stay_valid_on_every_architecture(name):
    model = ARCHITECTURES[name]()
    pruner = Pruner.from_model(model)
    blocks = len(pruner.blocks().blocks)
    macs = pruner.macs()
    pruner.prune(PruneOptions(depth=2, ratio=0.5))
    assert len(pruner.removed_blocks) == min(2, blocks)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_feeds(model)
    before, after = run(model, feeds), run(pruned, feeds)
    assert [b.shape for b in before] == [a.shape for a in after]
    assert all(np.isfinite(a).all() for a in after) and pruner.macs() < macs
    kinds = [s.kind for s in pruner.recipe.steps]
    assert kinds == (["blocks", "channels"] if blocks else ["channels"])


def test_a_saved_plan_with_removed_blocks_re_applies_to_the_input():
    model = ARCHITECTURES["resnet_bottleneck"]()
    pruner = Pruner.from_model(model)
    pruner.prune(PruneOptions(depth=1, ratio=0.5, steps=2))
    text = pruner.recipe.to_json()
    again = Pruner.from_model(model)
    again.replay(Recipe.from_json(text))
    feeds = random_feeds(model)
    for a, b in zip(run(pruner.to_model(), feeds), run(again.to_model(), feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert again.macs() == pruner.macs()
