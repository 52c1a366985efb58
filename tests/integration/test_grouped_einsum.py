"""Grouped linear layers written as Einsum (``btgc,gcd->btgd``) behind a Reshape that splits the channels into
groups (issue 17; a speech-enhancement encoder's layout). Each split prunes the same channels in every group
(Modulo on the merged axis), so every group's weight slice stays dense; the group count stays.

Model: tests/models/realworld/grouped_einsum.onnx (scripts/realworld_grouped.py, onnx.helper, no torch).
"""
import os

import numpy as np
import onnx
import pytest

from onnxprune import Pruner
from support.exported import MODELS_DIR
from support.oracle import assert_group_oracle, prune_channels, run

PATH = os.path.join(MODELS_DIR, "realworld", "grouped_einsum.onnx")
MACS = 0.417  # at --ratio 0.5, as measured (a ceiling); whole groups only before: 0.500


def _feeds(batch):
    return {"x": np.random.default_rng(batch).standard_normal((batch, 5, 16)).astype(np.float32)}


def _weights(model):
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    return values


@pytest.mark.parametrize("batch", [1, 3])
def test_channels_within_groups_equal_zeroing(batch):
    pruner = Pruner.from_model(onnx.load(PATH))
    dg = pruner.depgraph
    groups = dg.prunable_groups()
    # the first layer's channels within each of the 4 groups (and the residual), the grouped layer's 6 outputs
    assert sorted(g.size for g in groups) == [4, 6]
    for group in groups:
        for channels in ((0,), (group.size - 1,), tuple(range(0, group.size, 2))):
            assert_group_oracle(dg, group, channels, _feeds(batch))


def test_every_group_keeps_its_slice_dense():
    """Removing 2 of the 4 channels per group leaves 4 groups of 2 (the grouped weights [4, 2, 6] and [4, 6, 2]),
    and in_proj's 16 outputs lose the same 2 positions in every group (8 left)."""
    pruner = Pruner.from_model(onnx.load(PATH))
    group = next(g for g in pruner.depgraph.prunable_groups() if g.size == 4)
    weights = _weights(prune_channels(pruner.depgraph, group, (1, 3)))
    assert weights["w_in"].shape == (16, 8)
    assert weights["w_grouped_1"].shape == (4, 2, 6)
    assert weights["w_grouped_2"].shape == (4, 6, 2)
    original = _weights(onnx.load(PATH))
    kept = [g * 4 + c for g in range(4) for c in (0, 2)]
    np.testing.assert_array_equal(weights["w_in"], original["w_in"][:, kept])


def test_prunes_half():
    model = onnx.load(PATH)
    pruner = Pruner.from_model(model)
    macs = pruner.macs()
    pruner.prune(ratio=0.5)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    for batch in (1, 3):
        assert [a.shape for a in run(pruned, _feeds(batch))] == [b.shape for b in run(model, _feeds(batch))]
    assert pruner.macs() / macs <= MACS
