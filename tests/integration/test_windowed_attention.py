"""Windowed attention as torchvision's Swin exports it (issue 17): window partition and reverse, the
shifted-window roll and mask, q/k/v split at once into (3, heads, head_dim), every view's target read from
``Shape`` at run time.

Models: tests/models/realworld/swin_windows*.onnx (scripts/realworld_windows.py, onnx.helper, no torch) and
torchvision's SwinTransformer from both exporters (tests/models/tv_swin_*, scripts/export_transformers.py).
The width (C through Pad, roll, partition, reverse and unpad), the heads and the MLP prune, and equal zeroing
at two batch sizes where no LayerNorm statistics run over them (``swin_windows_affine``; heads and MLPs).
"""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import Pruner, onnx_in
from onnxprune.depgraph import DependencyGraph
from support.exported import MODELS_DIR, by_name
from support.oracle import (assert_group_oracle, assert_group_oracle_at_lengths, assert_valid_at_both_lengths,
                            run)

REALWORLD = os.path.join(MODELS_DIR, "realworld")
# MACs at --ratio 0.5, as measured (ceilings: lower them as rules land); before the pinned targets: 0.795
MACS = {("swin_windows", False): 0.540, ("swin_windows", True): 0.296, ("swin_windows_affine", False): 0.296}
PINNED_NOTE = ("9 operands (Reshape/Expand/Tile targets, ConstantOfShape shapes, Slice bounds, Range limits, sizes "
               "cast to floats) read fixed sizes from tensor shapes at run time: those sizes pinned as constants (so "
               "pruning can rewrite them, or leaves them as they were)")


def _load(name):
    return onnx.load(os.path.join(REALWORLD, f"{name}.onnx"))


def _feeds(batch):
    return {"x": np.random.default_rng(batch).standard_normal((batch, 4, 4, 6)).astype(np.float32)}


@pytest.mark.parametrize("name", ["swin_windows", "swin_windows_affine"])
def test_pinned_targets_keep_the_outputs(name):
    """Pinning the static sizes the targets read at run time changes no output, at two batch sizes."""
    model = _load(name)
    pruner = Pruner.from_model(model)
    assert pruner.notes == [PINNED_NOTE]
    rewritten = pruner.to_model()
    onnx.checker.check_model(rewritten, full_check=True)
    for batch in (1, 3):
        for a, b in zip(run(rewritten, _feeds(batch)), run(model, _feeds(batch))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_without_pinning_the_heads_are_a_barrier():
    """Read at run time from the normed input's shape, the C of the attention output's view would keep its
    old size when heads go: without the pinning pass the rule says so, naming the tensor the size comes from
    (a read of another view's Shape on the way does not count as reaching the values)."""
    dg = DependencyGraph(onnx_in.from_model(_load("swin_windows_affine")))
    heads = next(g for g in dg.groups if g.size == 2)
    assert not heads.prunable
    assert any("Reshape target takes axis 2 from the shape of" in r and "(before a layer) at run time" in r
               for r in heads.blocked), heads.blocked


def test_width_heads_and_mlp_equal_zeroing():
    """Through Pad, roll (Slice + Concat), window partition/reverse and unpad, and the (3, heads, head_dim)
    split picked apart by Gather: pruning equals zeroing, at two batch sizes."""
    pruner = Pruner.from_model(_load("swin_windows_affine"))
    dg = pruner.depgraph
    groups = dg.prunable_groups()
    assert sorted(g.size for g in groups) == [2, 8, 16]
    assert not any(dg.inexact_nodes(g) for g in groups)
    for batch in (1, 3):
        for group in groups:
            for channels in (tuple(range(0, group.size, 2)), (group.size - 1,)):
                assert_group_oracle(dg, group, channels, _feeds(batch))


@pytest.mark.parametrize("name, hidden", sorted(MACS))
def test_prunes_half(name, hidden):
    model = _load(name)
    pruner = Pruner.from_model(model)
    macs = pruner.macs()
    pruner.prune(ratio=0.5, prune_hidden=hidden)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    for batch in (1, 3):
        after = run(pruned, _feeds(batch))
        assert [a.shape for a in after] == [b.shape for b in run(model, _feeds(batch))]
        assert all(np.isfinite(a).all() for a in after)
    assert pruner.macs() / macs <= MACS[(name, hidden)]


def test_a_target_size_computed_from_constants_alone_is_a_barrier():
    """hidden -> (batch, 4, 2) with the 4 computed at run time from constants alone (2 + 2): pruning whole
    blocks of the 4 would leave it stale, so the Reshape says why it cannot."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="layer"),
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["b"], name="batch", axis=0),
        helper.make_node("Unsqueeze", ["b", "axes"], ["b1"], name="batch_1d"),
        helper.make_node("Add", ["two", "two"], ["four"], name="four"),
        helper.make_node("Concat", ["b1", "four", "two"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["h", "target"], ["y"], name="split"),
        helper.make_node("ReduceSum", ["y", "last"], ["out"], name="sum", keepdims=0),
    ]
    inits = [numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([2], np.int64), "last")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    dg = DependencyGraph(onnx_in.from_model(model))
    group = next(g for g in dg.groups if g.size in (4, 8))
    assert not group.prunable
    assert any("computes axis 1 at run time from constants alone" in r for r in group.blocked), group.blocked


# ---- torchvision's Swin, both exporters (tests/models/tv_swin_*, scripts/export_transformers.py) -------------
# MACs at --ratio 0.5 (ceilings); before the pinned targets and the (3, heads, head_dim) split: 0.840 for both,
# 0.840 (ts) and 0.633 (dynamo) with prune_hidden. The dynamo export's last-stage width stays a barrier (its
# flatten after the pooling is a Gather over the batch-folded feature axis).
TV_SWIN_MACS = {("tv_swin_ts", False): 0.547, ("tv_swin_ts", True): 0.328,
                ("tv_swin_dynamo", False): 0.547, ("tv_swin_dynamo", True): 0.395}


@pytest.mark.parametrize("name", ["tv_swin_ts", "tv_swin_dynamo"])
def test_torchvision_swin_heads_and_mlps_equal_zeroing(name):
    exported = by_name(name)
    pruner = Pruner.from_model(exported.load())
    dg = pruner.depgraph
    exact = [g for g in pruner.prunable_groups() if not dg.inexact_nodes(g)]
    # heads of the 3 blocks (2, 2, 4) and their MLPs (16, 16, 32)
    assert sorted(g.size for g in exact) == [2, 2, 4, 16, 16, 32]
    for group in exact:
        assert_group_oracle_at_lengths(dg, group, tuple(range(0, group.size, 2)), exported)


@pytest.mark.parametrize("name, hidden", sorted(TV_SWIN_MACS))
def test_torchvision_swin_prunes_half(name, hidden):
    exported = by_name(name)
    pruner = Pruner.from_model(exported.load())
    macs = pruner.macs()
    pruner.prune(ratio=0.5, prune_hidden=hidden)
    assert_valid_at_both_lengths(exported, pruner.to_model())
    assert pruner.macs() / macs <= TV_SWIN_MACS[(name, hidden)]
