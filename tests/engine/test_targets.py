"""Size targets: --target-macs / --target-params land within 2% of the original, for real."""
from pathlib import Path

import numpy as np
import pytest

from onnxprune import api
from onnxprune.api import Pruner
from onnxprune.budget import n_to_remove
from onnxprune.errors import PlanError
from onnxprune.metrics import count_macs
from onnxprune.options import PruneOptions
from onnxprune.targets import TOLERANCE
from support.architectures import ARCHITECTURES
from support.oracle import random_feeds, run

MODELS = Path(__file__).resolve().parents[2] / "models"


def reached(pruner: Pruner, metric: str, before: dict) -> float:
    now = {"macs": pruner.macs(), "params": pruner.params()}
    return now[metric] / before[metric]


def assert_target_met(pruner: Pruner, options: PruneOptions):
    before = {"macs": pruner.macs(), "params": pruner.params()}
    pruner.prune(options)
    metric, target = options.target
    real = reached(pruner, metric, before)
    search = pruner.searches[-1]
    assert abs(real - target) <= TOLERANCE, (metric, target, real)
    assert real == pytest.approx(search.reached, abs=1e-9)  # what the search measured is what the model has
    assert search.met and search.evaluations <= 40
    return search


@pytest.mark.parametrize("model,metric,target,global_rank", [
    ("resnet_small", "macs", 0.5, False),
    ("resnet_small", "params", 0.3, True),
    ("mobilenetv2_small", "macs", 0.3, True),
    ("mobilenetv2_small", "params", 0.5, False),
])
def test_targets_on_the_example_models(model, metric, target, global_rank):
    pruner = Pruner.load(MODELS / f"{model}.onnx")
    options = PruneOptions(global_rank=global_rank, **{f"target_{metric}": target})
    assert_target_met(pruner, options)
    pruner.validate(runs=0)  # checker + onnxruntime + output shapes


@pytest.mark.parametrize("k,arch", list(enumerate(sorted(ARCHITECTURES))))
def test_targets_on_the_test_architectures(k, arch):
    metric, global_rank = ("macs", "params")[k % 2], k % 4 < 2  # every architecture once, each mix 3 times
    pruner = Pruner.from_model(ARCHITECTURES[arch]())
    assert_target_met(pruner, PruneOptions(global_rank=global_rank, **{f"target_{metric}": 0.6}))


def test_uniform_target_with_round_to_and_fixed_ratios():
    pruner = Pruner.from_model(ARCHITECTURES["resnet_basic"]())
    first = pruner.prunable_groups()[0]
    sizes = {g.id: g.size for g in pruner.prunable_groups()}
    options = PruneOptions(target_macs=0.5, ratio_for=[f"^{first.root.node}$=0.25"], round_to=1)
    search = assert_target_met(pruner, options)
    removed = {d.group: len(d.removed) for d in search.plan.decisions}
    assert removed[first.id] == n_to_remove(sizes[first.id], 0.25)  # the fixed group kept its ratio
    pruner = Pruner.from_model(ARCHITECTURES["mobilenetv2"]())
    search = assert_target_met(pruner, PruneOptions(target_params=0.5, round_to=4, global_rank=True))
    assert all((d.size - len(d.removed)) % 4 == 0 for d in search.plan.decisions)


def test_unreachable_targets_say_why():
    pruner = Pruner.from_model(ARCHITECTURES["resnet_basic"]())
    with pytest.raises(PlanError, match=r"--target-macs 0.2 is out of reach: .* leaves x0\.\d+"):
        pruner.plan(target_macs=0.2, max_ratio=0.3)
    with pytest.raises(PlanError, match="--target-params 0.5 is out of reach"):
        pruner.plan(target_params=0.5, max_ratio=0.1)
    with pytest.raises(PlanError, match="fixed --ratio-for groups alone"):
        pruner.plan(target_macs=0.95, ratio_for=[".*=0.9"])
    assert pruner.plans == []


def test_target_one_prunes_nothing():
    pruner = Pruner.from_model(ARCHITECTURES["plain_cnn"]())
    assert pruner.plan(target_macs=1.0).decisions == ()


def test_latency_target_searches_on_measured_latency(monkeypatch):
    """Latency is timed side by side; here the clock is replaced by a MACs-proportional one."""
    pruner = Pruner.from_model(ARCHITECTURES["resnet_basic"]())
    base = pruner.macs()
    calls = []

    def fake_latency(sessions, feeds, runs=20, warmup=3):
        calls.append(runs)
        outputs = [s.get_outputs()[0].name for s in sessions]
        assert len(sessions) == 2 and outputs[0] == outputs[1]
        return [1.0, 0.2 + 0.8 * current[-1] / base]

    current = []
    real_fraction = pruner._fraction

    def fraction(metric, options, provider="cpu"):
        measure = real_fraction(metric, options, provider)

        def wrapped(graph):
            current.append(count_macs(graph, pruner.registry))
            return measure(graph)
        return wrapped

    monkeypatch.setattr(api, "latency_side_by_side", fake_latency)
    monkeypatch.setattr(pruner, "_fraction", fraction)
    pruner.prune(target_latency=0.6, latency_runs=5)
    search = pruner.searches[-1]
    assert search.metric == "latency" and search.met and calls and set(calls) == {5}
    assert abs(0.2 + 0.8 * pruner.macs() / base - 0.6) <= TOLERANCE
    model = pruner.to_model()
    feeds = random_feeds(model)
    assert np.all(np.isfinite(run(model, feeds)[0]))
