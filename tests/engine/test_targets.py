"""Size targets: --target-macs / --target-params land within 2% of the original, for real."""
from pathlib import Path

import numpy as np
import pytest

from onnxprune.api import Pruner
from onnxprune.budget import n_to_remove
from onnxprune.errors import PlanError
from onnxprune.metrics import count_macs
from onnxprune.options import LatencyOptions, PruneOptions
from onnxprune.targets import TOLERANCE
from support.architectures import ARCHITECTURES
from support.oracle import random_feeds, run
from support.timing import ScriptedTimings

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
    """Latency is timed side by side (onnxprune.latency); here with scripted timings proportional to MACs."""
    pruner = Pruner.from_model(ARCHITECTURES["resnet_basic"]())
    base = pruner.macs()
    current = []

    def seconds(k, n):  # the original 1 ms, a candidate 0.2 ms + 0.8 ms x its MACs fraction
        return 1e-3 if k == 0 else (0.2 + 0.8 * current[-1] / base) * 1e-3
    timings = ScriptedTimings(seconds, run_sessions=True).install(monkeypatch)
    real_fraction = pruner._fraction

    def fraction(metric, options, provider="cpu", graph_latency=None):
        measure = real_fraction(metric, options, provider, graph_latency)

        def wrapped(graph):
            current.append(count_macs(graph, pruner.registry))
            return measure(graph)
        return wrapped

    monkeypatch.setattr(pruner, "_fraction", fraction)
    pruner.prune(target_latency=0.6, round_to=1, latency=LatencyOptions(min_runs=5, warmup=1, threads=2),
                 depth_search=False)  # width only (depth and width together: test_depthwidth.py)
    search = pruner.searches[-1]
    assert search.metric == "latency" and search.met
    assert abs(0.2 + 0.8 * pruner.macs() / base - 0.6) <= TOLERANCE
    # every candidate was timed against the original at the stated threads; the original's session is reused
    sessions = {k: {id(s) for i, s in timings.calls if i == k} for k in (0, 1)}
    assert len(sessions[0]) == 1 and len(sessions[1]) == search.evaluations
    assert {s.get_session_options().intra_op_num_threads for _, s in timings.calls} == {2}
    model = pruner.to_model()
    feeds = random_feeds(model)
    assert np.all(np.isfinite(run(model, feeds)[0]))
