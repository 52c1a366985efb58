"""Iterative pruning (--steps): valid models, cumulative budgets, re-scoring, one composed plan."""
import math

import numpy as np
import onnx
import pytest

from onnxprune.api import Pruner
from onnxprune.depgraph import EndKind
from onnxprune.options import PruneOptions
from onnxprune.plan import make_plan
from onnxprune.targets import TOLERANCE
from support.architectures import ARCHITECTURES
from support.oracle import random_feeds, run
from support.small_models import conv_chain


def removed_per_group(plan):
    return {d.group: len(d.removed) for d in plan.decisions}


@pytest.mark.parametrize("arch", ["resnet_basic", "mobilenetv2", "densenet", "shufflenetv2", "yolo_neck"])
def test_steps_give_a_valid_model_equal_to_its_plan_reapplied(arch):
    model = ARCHITECTURES[arch]()
    stepped = Pruner.from_model(model)
    plan = stepped.prune(ratio=0.5, steps=3, criterion="l1")
    assert plan is not None and len(stepped.plans) == 3
    once = Pruner.from_model(model)
    once.apply(plan)  # the three rounds as one plan on the original graph
    a, b = stepped.to_model(), once.to_model()
    onnx.checker.check_model(a, full_check=True)
    assert (stepped.params(), stepped.macs()) == (once.params(), once.macs())
    feeds = random_feeds(model)
    for x, y in zip(run(a, feeds), run(b, feeds)):
        np.testing.assert_array_equal(x, y)
    assert stepped.validate(runs=0).shapes_match


@pytest.mark.parametrize("arch", ["resnet_basic", "mobilenetv2", "inception"])
def test_rounds_add_up_to_the_asked_ratio(arch):
    model = ARCHITECTURES[arch]()
    pruner = Pruner.from_model(model)
    single = make_plan(pruner.depgraph, ratio=0.5)
    composed = pruner.prune(ratio=0.5, steps=4)
    assert removed_per_group(composed) == removed_per_group(single)


def test_caps_count_against_the_original_group():
    pruner = Pruner.from_model(ARCHITECTURES["mobilenetv2"]())
    sizes = {g.id: g.size for g in pruner.prunable_groups()}
    composed = pruner.prune(ratio=0.6, global_rank=True, max_ratio=0.5, steps=3)
    removed = removed_per_group(composed)
    assert any(n == math.floor(sizes[g] * 0.5) for g, n in removed.items())  # the cap was reached...
    assert all(n <= math.floor(sizes[g] * 0.5) for g, n in removed.items())  # ...and never passed


def test_steps_with_a_target_shrink_towards_it():
    pruner = Pruner.from_model(ARCHITECTURES["resnet_basic"]())
    macs0 = pruner.macs()
    seen = []
    pruner.prune(PruneOptions(target_macs=0.4, steps=3), after_step=lambda p, step: seen.append(p.macs() / macs0))
    assert [s.target for s in pruner.searches] == pytest.approx([0.8, 0.6, 0.4])
    assert all(abs(r - t) <= TOLERANCE for r, t in zip(seen, (0.8, 0.6, 0.4)))


def _zero_channel(pruner: Pruner, node: str, channel: int) -> None:
    """Zero one channel of a group in every coupled parameter (as a recovery step might change weights)."""
    group = pruner.group_of(node)
    for end in group.ends:
        if end.kind == EndKind.PARAM:
            value = pruner.graph.params[end.tensor].copy()
            index = [slice(None)] * value.ndim
            index[end.axes[0]] = group.channels[channel][end]
            value[tuple(index)] = 0
            pruner.graph.params[end.tensor] = value


def test_the_hook_runs_between_rounds_and_the_next_round_rescores():
    pruner = Pruner.from_model(conv_chain())
    calls = []

    def after_step(p: Pruner, step: int) -> None:
        calls.append((step, p.group_of("Conv_0").size))
        if step == 1:
            _zero_channel(p, "Conv_0", 5)  # now the least important channel of the 6 left

    composed = pruner.prune(ratio=0.5, steps=2, after_step=after_step, round_to=1)  # 8 -> 6 -> 4
    assert calls == [(1, 6), (2, 4)]
    first, second = pruner.plans
    assert 5 in second.decisions[0].removed
    kept_after_first = [c for c in range(8) if c not in first.decisions[0].removed]
    assert kept_after_first[5] in composed.decisions[0].removed  # named in original channels
