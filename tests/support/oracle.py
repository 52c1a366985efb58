"""The DepGraph oracle: pruning a group must equal zeroing it (onnxruntime judges)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune import onnx_in, onnx_out
from onnxprune.depgraph import DependencyGraph, Group
from onnxprune.masking import mask_group
from onnxprune.plan import GroupDecision, Plan
from onnxprune.rewrite import apply_plan


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def depgraph(model: onnx.ModelProto) -> DependencyGraph:
    return DependencyGraph(onnx_in.from_model(model))


def prune_channels(dg: DependencyGraph, group: Group, channels) -> onnx.ModelProto:
    plan = Plan((GroupDecision(group.id, str(group.root), group.size, tuple(channels)),))
    pruned = onnx_out.to_model(apply_plan(dg, plan))
    with onnx_in.checkable(pruned):  # onnxruntime's default-domain ops are checked like contrib ops
        onnx.checker.check_model(pruned, full_check=True)
    return pruned


def assert_group_oracle(dg: DependencyGraph, group: Group, channels, feeds, rtol=1e-4, atol=1e-4) -> None:
    """Pruned outputs == outputs of the original with the same channels masked to zero."""
    pruned = prune_channels(dg, group, channels)
    masked = onnx_out.to_model(mask_group(dg, group, channels))
    expected, actual = run(masked, feeds), run(pruned, feeds)
    for e, a in zip(expected, actual):
        assert e.shape == a.shape
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol,
                                   err_msg=f"group {group.describe()} channels {list(channels)}")


def assert_all_groups_oracle(model: onnx.ModelProto, min_groups: int = 1, seed: int = 0) -> DependencyGraph:
    """Check the oracle for every prunable group, removing every other channel."""
    dg = depgraph(model)
    groups = dg.prunable_groups()
    assert len(groups) >= min_groups, [g.describe() for g in dg.groups]
    feeds = random_feeds(model, seed)
    for group in groups:
        channels = tuple(range(0, group.size, 2))
        if dg.inexact_nodes(group):  # not zero-equivalent by design: valid and same shapes only
            pruned = prune_channels(dg, group, channels)
            assert [a.shape for a in run(pruned, feeds)] == [a.shape for a in run(model, feeds)]
        else:
            assert_group_oracle(dg, group, channels, feeds)
    return dg


def assert_group_oracle_at_lengths(dg: DependencyGraph, group: Group, channels, exported) -> None:
    """Pruning ``channels`` of ``group`` equals zeroing them, at both test lengths of an exported model."""
    pruned = prune_channels(dg, group, channels)
    masked = onnx_out.to_model(mask_group(dg, group, channels))
    for k in (0, 1):
        feeds = exported.feeds(k)
        for e, a in zip(run(masked, feeds), run(pruned, feeds)):
            assert e.shape == a.shape
            np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4, err_msg=f"{group.describe()} length {k}")


def assert_valid_at_both_lengths(exported, pruned: onnx.ModelProto) -> None:
    """A pruned exported model passes the full checker and, at both test lengths, gives finite outputs
    of the original's shapes (its dynamic axes really stay dynamic)."""
    onnx.checker.check_model(pruned, full_check=True)
    for k in (0, 1):
        feeds = exported.feeds(k)
        before, after = run(exported.load(), feeds), run(pruned, feeds)
        assert [b.shape for b in before] == [a.shape for a in after]
        assert all(np.isfinite(a).all() for a in after)


def refit_without_duplicate(pruner, tensor: str, channel: int, samples: int = 40, seed: int = 0, **options):
    """Remove the group channel that sits at ``channel`` of ``tensor`` (a duplicate of a kept one) and
    re-fit by least squares alone, without ridge: recovery must then restore the original exactly.
    ``options``: more RecoveryOptions fields."""
    from onnxprune.calibration import CalibrationSet
    group = pruner.group_of(tensor)
    k = next(k for k, chans in enumerate(group.channels)
             if any(e.tensor == tensor and channel in idx for e, idx in chans.items()))
    pruner.prune_group(group, [k])
    shape = tuple(pruner.original_graph.values[pruner.original_graph.inputs[0].name].shape[1:])
    rng = np.random.default_rng(seed)
    data = CalibrationSet.from_arrays({pruner.original_graph.inputs[0].name:
                                       rng.standard_normal((samples, *shape)).astype(np.float32)},
                                      pruner.original_graph.inputs)
    return pruner.recover(data, methods=("lstsq",), ridge=0.0, **options)
