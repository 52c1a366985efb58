"""Never slower: size-target plans are timed against the original (timings injected here)."""
import pytest

from onnxprune.api import Pruner
from onnxprune.errors import PlanError
from onnxprune.options import LatencyOptions, PruneOptions
from onnxprune.speed import LatencyRatio, never_slower
from onnxprune.targets import TOLERANCE, SearchResult
from support.architectures import ARCHITECTURES
from support.small_models import wide_cnn

FAST, SLOW, SAME = (LatencyRatio(0.7, (0.65, 0.75), (0.65, 0.75)), LatencyRatio(1.3, (1.2, 1.4), (1.2, 1.4)),
                    LatencyRatio(1.0, (0.95, 1.05), (0.95, 1.05)))


def _result(name: str, reached: float = 0.5) -> SearchResult:
    from onnxprune.plan import Plan
    return SearchResult(Plan((), criterion=name), "macs", 0.5, reached, 0.5, 1, 0.0, grid=name)


def test_a_faster_plan_is_returned_without_trying_others():
    def never(): raise AssertionError("searched an alternative")
    result = never_slower(_result("fine"), [never], lambda plan: FAST)
    assert result.grid == "fine" and result.speed.faster and len(result.speed.tried) == 1


def test_a_slower_plan_gives_way_to_a_faster_one_at_the_same_budget():
    timings = {"fine": SLOW, "coarse": FAST, "coarser": FAST}
    searched = []

    def alternative(name):
        def make():
            searched.append(name)
            return _result(name, 0.51)
        return make
    result = never_slower(_result("fine"), [alternative("coarse"), alternative("coarser")],
                          lambda plan: timings[plan.criterion])
    assert result.grid == "coarse" and result.speed.faster
    assert searched == ["coarse"]  # stops at the first faster plan
    assert [t[0] for t in result.speed.tried] == ["fine", "coarse"]
    assert result.speed.to_dict()["tried"][0]["latency_ratio"]["ratio"] == 1.3


def test_without_a_faster_plan_the_fastest_is_returned_and_flagged():
    timings = {"fine": SLOW, "coarse": SAME}
    result = never_slower(_result("fine"), [lambda: _result("coarse")], lambda plan: timings[plan.criterion])
    assert result.grid == "coarse" and not result.speed.faster
    assert result.speed.to_dict()["faster"] is False


def test_alternatives_out_of_reach_or_off_target_are_skipped():
    def unreachable(): raise PlanError("out of reach")
    timings = {"fine": SLOW, "off": FAST}
    result = never_slower(_result("fine"), [unreachable, lambda: _result("off", 0.5 + 2 * TOLERANCE)],
                          lambda plan: timings[plan.criterion])
    assert result.grid == "fine" and not result.speed.faster and len(result.speed.tried) == 1


def _kept_widths(pruner):
    graph = pruner.graph
    return [graph.params[n.inputs[1]].shape[0] for n in graph.nodes if n.op_type == "Conv"]


def test_the_pruner_returns_the_coarser_grid_when_the_default_one_is_timed_slower():
    """Injected latency: a plan that moves any conv width off the grid of 16 is 'slower'."""
    def on_16(w, w0):
        return w == w0 or w0 % 16 or w % 16 == 0 or 16 % w == 0

    def latency(plan):
        return FAST if all(map(on_16, _kept_widths(probe_of(plan)), original)) else SLOW

    def probe_of(plan):
        probe = Pruner.from_model(wide_cnn())
        probe.apply(plan)
        return probe
    original = _kept_widths(Pruner.from_model(wide_cnn()))
    pruner = Pruner.from_model(wide_cnn())
    macs0 = pruner.macs()
    pruner.prune(PruneOptions(target_macs=0.5, never_slower=True, width_grid="default"), plan_latency=latency)
    search = pruner.searches[-1]
    assert search.speed.faster and len(search.speed.tried) == 2  # the default grid (8), then twice as coarse
    assert "conv 16" in search.grid
    assert all(map(on_16, _kept_widths(pruner), original))
    assert abs(pruner.macs() / macs0 - 0.5) <= TOLERANCE
    pruner.validate(runs=0)


@pytest.mark.parametrize("never_slower", [False, None])
def test_the_check_is_off_when_asked(never_slower):
    """never_slower=False, or None with ONNXPRUNE_SPEED_CHECK=0 (set by the test suite's conftest)."""
    def latency(plan): raise AssertionError("timed")
    pruner = Pruner.from_model(ARCHITECTURES["mobilenetv2"]())
    pruner.prune(PruneOptions(target_macs=0.5, never_slower=never_slower), plan_latency=latency)
    assert pruner.searches[-1].speed is None


def test_the_check_times_for_real_through_onnxruntime():
    """No assertion on the timings: only that a real measurement runs and is recorded."""
    pruner = Pruner.from_model(ARCHITECTURES["plain_cnn"]())
    pruner.prune(PruneOptions(target_macs=0.5, never_slower=True, width_grid="default",
                              latency=LatencyOptions(min_runs=12, max_seconds=1.0)))
    check = pruner.searches[-1].speed
    assert check is not None and check.chosen.ci95[0] <= check.chosen.median <= check.chosen.ci95[1]
    assert 1 <= len(check.tried) <= 3
