"""What bought the speed: each recipe step's latency (injected), MACs, cosine and items."""
import numpy as np
import pytest

from onnxprune.api import Pruner
from onnxprune.attribution import attribute, replay_stages, summary_lines
from onnxprune.latency import RatioSpread
from onnxprune.recipe import BLOCKS, CHANNELS, FUSE
from support.architectures import ARCHITECTURES
from support.oracle import random_feeds, run


def spread(ratio):
    return RatioSpread(ratio, (ratio - 0.01, ratio + 0.01), (ratio - 0.005, ratio + 0.005))


def _pruned():
    pruner = Pruner.from_model(ARCHITECTURES["resnet_basic"]())
    pruner.prune(ratio=0.5, depth=1, round_to=1)
    pruner.fuse()
    return pruner


def test_the_replayed_steps_rebuild_the_model_step_by_step():
    pruner = _pruned()
    stages = replay_stages(pruner.fresh(), pruner.recipe.steps)
    assert [s.step.kind for s in stages] == [BLOCKS, CHANNELS, FUSE]
    assert stages[0].before is pruner.original_graph
    for a, b in zip(stages, stages[1:]):
        assert b.before is a.after
    model = pruner.to_model()
    feeds = random_feeds(model)
    from onnxprune import onnx_out
    replayed = onnx_out.to_model(stages[-1].after)
    for x, y in zip(run(model, feeds), run(replayed, feeds)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_each_step_gets_its_measured_change_macs_cosine_and_items():
    pruner = _pruned()
    stages = replay_stages(pruner.fresh(), pruner.recipe.steps)
    timed = []

    def time_all(graphs):  # injected: after blocks x0.8, after channels x0.5, after fusion x0.45
        timed.append(len(graphs))
        return [spread(r) for r in (0.8, 0.5, 0.45)]
    cosines = iter([0.99, 0.9, 0.9])
    rows = attribute(stages, pruner.graph, pruner.registry, time_all, lambda graph: next(cosines))
    assert timed == [3]  # one side-by-side measurement for every step
    assert [r["step"] for r in rows] == [BLOCKS, CHANNELS, FUSE]
    assert [r["latency_change"] for r in rows] == pytest.approx([-0.2, -0.3, -0.05])
    assert [r["cosine_change"] for r in rows] == pytest.approx([-0.01, -0.09, 0.0])
    macs0 = Pruner.from_model(ARCHITECTURES["resnet_basic"]()).macs()
    assert rows[-1]["macs"] == pytest.approx(pruner.macs() / macs0)
    assert sum(r["macs_change"] for r in rows) == pytest.approx(pruner.macs() / macs0 - 1)
    (block,) = rows[0]["items"]
    assert block["join"] == pruner.removed_blocks[0]["join"]
    assert block["macs_share"] == pytest.approx(-rows[0]["macs_change"])  # the block's MACs are what went
    kinds = [i for i in rows[1]["items"] if "layer_kind" in i]
    assert {i["layer_kind"] for i in kinds} >= {"conv"}
    assert sum(i["macs_before"] - i["macs_after"] for i in kinds) == pytest.approx(-rows[1]["macs_change"] * macs0)
    assert rows[1]["items"][-1]["channels"] == pruner.plans[-1].removed_channels
    assert rows[2]["items"] and all(i["fused"] > 0 for i in rows[2]["items"])
    text = summary_lines(rows, verbose=True)
    assert text[0].startswith("speed by  1 block x0.800 (-0.200), ") and "fuse x0.450 (-0.050)" in text[0]
    assert any("block at" in line for line in text) and any("conv:" in line for line in text)


def test_without_timing_the_rows_carry_macs_only():
    pruner = _pruned()
    rows = attribute(replay_stages(pruner.fresh(), pruner.recipe.steps), pruner.graph, pruner.registry, None, None)
    assert all(r["latency_ratio"] is None and r["cosine"] is None and r["macs"] is not None for r in rows)
    assert summary_lines(rows)[0].startswith("speed by  1 block, ")
