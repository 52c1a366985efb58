"""Latency side by side (onnxprune.latency): interleaving, stopping rules, spread, verdicts, threads.

Every timing here is scripted (support.timing): no assertion depends on the machine's speed.
"""
import math

import numpy as np
import pytest

from onnxprune import latency
from onnxprune.errors import OptionError
from onnxprune.latency import LatencyComparison, RatioSpread, Stop, Verdict, compare, median_ci_ranks
from onnxprune.options import LatencyOptions
from support.small_models import conv_chain
from support.timing import ScriptedTimings, alternating, constant, paired

FEEDS = {"input": np.zeros((1, 3, 8, 8), np.float32)}


class Stub:
    """Stands for a session: scripted timings never run it."""

    def run(self, outputs, feeds):
        raise AssertionError("scripted timings do not run sessions")


def timed(seconds, n_models=2, **options):
    timings = ScriptedTimings(seconds, warmup=options.get("warmup", LatencyOptions().warmup))
    result = timings.compare([Stub() for _ in range(n_models)], FEEDS, options=LatencyOptions(**options))
    return result, timings


def exact_lower_rank(n):
    """Oracle: the largest 1-based rank j with P(Binomial(n, 1/2) <= j - 1) <= 2.5%, by exact integers."""
    j, below = 0, 0
    while 40 * (below + math.comb(n, j)) <= 2 ** n:  # P(B <= j) <= 1/40
        below += math.comb(n, j)
        j += 1
    return j


@pytest.mark.parametrize("n", [6, 7, 10, 20, 37, 100, 333, 1000])
def test_median_interval_ranks_are_the_exact_binomial_ones(n):
    j = exact_lower_rank(n)
    assert median_ci_ranks(n) == (j - 1, n - j)
    assert median_ci_ranks(20) == (5, 14)  # the textbook ranks 6 and 15


def test_median_interval_ranks_beyond_1000_values_are_within_one_of_exact():
    for n in (1001, 1500, 2400):
        lo, hi = median_ci_ranks(n)
        assert abs((lo + 1) - exact_lower_rank(n)) <= 1 and hi == n - 1 - lo


def test_below_six_values_the_interval_is_min_to_max():
    assert [median_ci_ranks(n) for n in (1, 2, 5)] == [(0, 0), (0, 1), (0, 4)]


def test_rounds_are_interleaved_in_pairs_the_second_in_reverse_order():
    result, timings = timed(constant(1e-3, 2e-3, 2e-3), n_models=3, min_runs=4, max_runs=4, warmup=2)
    order = [k for k, _ in timings.calls]
    assert order[:6] == [0, 1, 2, 0, 1, 2]  # warm-up, each model in turn
    assert order[6:] == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0]
    assert result.runs == 4 and result.ms == pytest.approx((1.0, 2.0, 2.0))
    assert [r.median for r in result.ratios] == pytest.approx([2.0, 2.0])


def test_medians_and_ratios_over_pairs_of_rounds():
    ratios = (0.4, 0.5, 0.6, 0.5, 0.55, 0.45, 0.5)
    result, _ = timed(paired(2e-3, ratios), min_runs=14, max_runs=14, warmup=0)
    assert result.ms_before == pytest.approx(2.0) and result.ms_after == pytest.approx(2.0 * np.median(ratios))
    assert result.ratio == pytest.approx(np.median(ratios))
    assert result.spread.iqr == pytest.approx(tuple(np.percentile(ratios, [25, 75])))
    lo, hi = median_ci_ranks(7)
    assert result.spread.ci95 == pytest.approx((np.sort(ratios)[lo], np.sort(ratios)[hi]))


def test_a_pair_of_rounds_cancels_what_the_position_in_a_round_costs():
    """On a loaded machine the model that runs second in a round can take twice as long (time slices);
    each model runs once in each position per pair, so the ratio is the true one."""
    def seconds(k, n):  # model 1 takes half of model 0; whoever runs second in a round takes x2
        true = (1e-3, 0.5e-3)[k]
        second = (n % 2 == 0) == (k == 1)  # round 2i: model 1 second; round 2i + 1: model 0 second
        return true * (2 if second else 1)
    result, _ = timed(seconds, min_runs=20, warmup=0)
    per_round = [(0.5 * 2) / 1, 0.5 / (1 * 2)]  # a single round would say x1.0 or x0.25
    assert per_round == [1.0, 0.25] and result.ratio == pytest.approx((1.0 + 0.5) / (1 + 2))


def test_medians_that_disagree_with_the_paired_ratio_are_flagged_as_a_busy_machine():
    """Model 0 is disturbed (x3) in a run of every three, model 1 in none: its median moves, pairs less."""
    result, _ = timed(lambda k, n: 0.5e-3 if k else 1e-3 * (3 if n % 3 == 0 else 1), min_runs=60, max_runs=60,
                      warmup=0)
    assert result.busy and "machine busy: ms medians disturbed" in result.text()
    assert not timed(constant(1e-3, 0.5e-3), min_runs=4)[0].busy


def test_stops_at_the_first_round_whose_interval_is_narrow_enough():
    rng = np.random.default_rng(0)
    noise = tuple(0.6 * (1 + 0.2 * rng.standard_normal(5000)))
    result, _ = timed(alternating(1e-3, noise), min_runs=10, max_runs=5000, max_seconds=1e9, spread=0.02,
                      warmup=0)
    assert result.stopped is Stop.SPREAD and 10 < result.runs < 5000 and result.runs % 2 == 0
    runs = np.array(noise[:result.runs])
    pairs = (runs[0::2] + runs[1::2]) / 2  # model 0 took 1 ms in every round
    assert RatioSpread.of(pairs).half_width <= 0.02 < RatioSpread.of(pairs[:-1]).half_width
    assert result.verdict is Verdict.FASTER and not result.not_faster and result.warning() is None


def test_an_exact_ratio_stops_after_the_minimum_runs():
    result, timings = timed(constant(1e-3, 0.5e-3), min_runs=7, warmup=1)  # rounded up to a pair
    assert result.stopped is Stop.SPREAD and result.runs == 8 and len(timings.calls) == 2 * (1 + 8)
    assert result.spread.ci95 == pytest.approx((0.5, 0.5)) and result.verdict is Verdict.FASTER


def test_stops_at_the_time_limit_when_the_spread_stays_wide():
    result, timings = timed(paired(1.0, (0.6, 1.5)), min_runs=4, max_runs=10_000, max_seconds=30, warmup=1)
    assert result.stopped is Stop.TIME
    warmup = 1.0 + 0.6
    elapsed = [warmup + sum(2 * (1.0 + (0.6, 1.5)[i % 2]) for i in range(p)) for p in range(1, 40)]
    assert result.runs == 2 * next(p for p, t in enumerate(elapsed, 1) if t >= 30 and 2 * p >= 4)
    assert result.seconds == pytest.approx(timings.now) and result.seconds >= 30
    assert "stopped at the time limit" in result.text()


def test_the_time_limit_waits_for_the_minimum_runs():
    result, _ = timed(paired(1.0, (0.6, 1.5)), min_runs=12, max_runs=100, max_seconds=1, warmup=0)
    assert result.stopped is Stop.TIME and result.runs == 12


def test_stops_at_max_runs():
    result, _ = timed(paired(1e-3, (0.6, 1.5)), min_runs=3, max_runs=7, max_seconds=1e9, warmup=0)
    assert result.stopped is Stop.RUNS and result.runs == 8  # rounded up to a pair


def test_a_spread_crossing_one_is_no_measurable_change_even_below_one():
    result, _ = timed(paired(1e-3, (0.8, 0.9, 0.95, 1.05, 1.1)), min_runs=10, max_runs=10, warmup=0)
    assert result.ratio < 1 and result.spread.ci95[0] < 1 < result.spread.ci95[1]
    assert result.verdict is Verdict.NO_CHANGE and result.not_faster
    assert result.text().startswith("no measurable change: x0.950, 95% CI x0.800-1.100; 10 runs, 1 thread")
    assert result.warning().startswith("the pruned model is not measurably faster than the original: "
                                       "latency 1 ms -> 0.95 ms, x0.950 (95% CI x0.800-1.100) on cpu")


def test_a_slower_model_gets_a_loud_warning_with_the_figures():
    result, _ = timed(paired(1e-3, (1.25, 1.3, 1.35)), min_runs=30, max_runs=30, warmup=0)
    assert result.verdict is Verdict.SLOWER and result.not_faster and result.spread.ci95[0] > 1
    assert result.warning() == ("the pruned model is SLOWER than the original: latency 1 ms -> 1.3 ms, "
                                "x1.300 (95% CI x1.250-1.350) on cpu, 30 runs, 1 thread, stopped at the max runs")


def test_sessions_are_made_with_the_thread_count_stated():
    timings = ScriptedTimings(constant(1e-3, 1e-3), run_sessions=True)
    result = timings.compare([conv_chain(), conv_chain()], FEEDS, threads=2, options=LatencyOptions(min_runs=2))
    made = {id(s): s.get_session_options() for _, s in timings.calls}
    assert len(made) == 2 and result.threads == 2
    assert all(o.intra_op_num_threads == 2 and o.inter_op_num_threads == 2 for o in made.values())
    result = timings.compare([conv_chain(), conv_chain()], FEEDS, options=LatencyOptions(min_runs=2, threads=3))
    assert result.threads == 3 and timings.calls[-1][1].get_session_options().intra_op_num_threads == 3


def test_a_session_made_with_other_threads_is_refused():
    default = latency._session(conv_chain())  # onnxruntime's default thread count
    with pytest.raises(OptionError, match="session 1 runs the default number of threads.*threads=1"):
        compare([latency.session(conv_chain()), default], FEEDS)
    with pytest.raises(OptionError, match="at least two models"):
        compare([latency.session(conv_chain())], FEEDS)
    with pytest.raises(OptionError, match="--threads must be >= 1"):
        compare([conv_chain(), conv_chain()], FEEDS, threads=0)


def test_the_cuda_provider_goes_through_the_same_measurement(monkeypatch):
    made = []

    def fake_session(model, provider="cpu", threads=None):
        made.append((provider, threads))
        return Stub()
    monkeypatch.setattr(latency, "_session", fake_session)
    timings = ScriptedTimings(constant(1e-3, 0.9e-3))
    result = timings.compare([conv_chain(), conv_chain()], FEEDS, provider="cuda", options=LatencyOptions(min_runs=3))
    assert made == [("cuda", 1), ("cuda", 1)] and result.provider == "cuda"
    assert result.to_dict()["provider"] == "cuda" and result.verdict is Verdict.FASTER


def test_the_comparison_round_trips_through_its_dict():
    result, _ = timed(paired(1e-3, (0.5, 0.6, 0.7)), min_runs=10, max_runs=10, warmup=0)
    data = result.to_dict()
    assert data["ratio"] == result.ratio and data["ratio_ci95"] == list(result.spread.ci95)
    assert data["verdict"] == "faster" and data["not_faster"] is False and data["threads"] == 1
    assert data["runs"] == 10 and data["stopped_by"] == "max runs" and data["ms"] == list(result.ms)
    assert LatencyComparison.from_dict(data) == result


@pytest.mark.parametrize("options, fragment", [
    (dict(threads=0), "--threads must be >= 1"), (dict(min_runs=-1), "--runs must be >= 0"),
    (dict(min_runs=30, max_runs=20), "--max-runs must be >= --runs"), (dict(max_seconds=0), "--latency-time"),
    (dict(spread=0), "--latency-spread"), (dict(spread=1.5), "--latency-spread")])
def test_bad_latency_options_name_the_option(options, fragment):
    with pytest.raises(OptionError, match=fragment):
        LatencyOptions(**options).check()
