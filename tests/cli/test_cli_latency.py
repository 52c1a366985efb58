"""The latency line of a prune, its spread, --threads, and the loud warning when the prune is not faster.

Timings are scripted (support.timing) through every onnxprune.latency.compare call: the sessions
the CLI made run for real, the clock is fake.
"""
import json
from pathlib import Path

import pytest

from onnxprune.cli import main
from support.small_models import conv_chain, save
from onnxprune.options import LatencyOptions
from support.timing import ScriptedTimings, constant, paired

WARMUP = LatencyOptions().warmup


@pytest.fixture
def small(tmp_path):
    return Path(save(conv_chain(), tmp_path / "small.onnx"))


def prune(capfd, small, *extra):
    code = main([str(small), str(small.parent / "out.onnx"), "--report", str(small.parent / "r.json"), "-q",
                 *map(str, extra)])
    out, err = capfd.readouterr()
    report = json.loads((small.parent / "r.json").read_text()) if code == 0 else None
    return code, out, err, report


def test_a_faster_prune_prints_its_ratio_with_the_spread_and_no_warning(monkeypatch, capfd, small):
    ScriptedTimings(constant(2e-3, 1e-3), run_sessions=True).install(monkeypatch)
    code, out, err, report = prune(capfd, small, "--runs", "6")
    assert code == 0 and err == ""
    assert "latency   2.00 ms -> 1.00 ms  (x0.500, 95% CI x0.500-0.500; 6 runs, 1 thread)  [cpu]" in out
    assert "WARNING" not in out and report["warnings"] == []
    assert report["latency_not_faster"] is False and report["latency_ratio"] == 0.5
    lat = report["latency"]
    assert lat["verdict"] == "faster" and lat["ratio_ci95"] == [0.5, 0.5] and lat["ratio_iqr"] == [0.5, 0.5]
    assert (lat["threads"], lat["runs"], lat["provider"], lat["stopped_by"]) == (1, 6, "cpu", "spread")
    assert report["latency_ms_before"] == pytest.approx(2.0) and report["latency_ms_after"] == pytest.approx(1.0)


def test_a_slower_prune_says_so_loudly_in_the_summary_and_the_report(monkeypatch, capfd, small):
    ScriptedTimings(paired(1e-3, (1.5, 1.6, 1.7)), run_sessions=True, warmup=WARMUP).install(monkeypatch)
    code, out, err, report = prune(capfd, small, "--runs", "10", "--max-runs", "10")
    assert code == 0 and (small.parent / "out.onnx").exists()  # still written: the warning is not a failure
    warning = [line for line in out.splitlines() if line.startswith("WARNING")]
    assert warning == ["WARNING   the pruned model is SLOWER than the original: latency 1 ms -> 1.6 ms, "
                       "x1.600 (95% CI x1.500-1.700) on cpu, 10 runs, 1 thread, stopped at the max runs"]
    assert out.splitlines()[-1] == warning[0]  # the last line, after "wrote"
    assert report["latency_not_faster"] is True and report["latency"]["verdict"] == "slower"
    assert report["warnings"] == [warning[0][len("WARNING   "):]]


def test_no_measurable_change_is_printed_and_warned_about(monkeypatch, capfd, small):
    ScriptedTimings(paired(1e-3, (0.9, 1.0, 1.1)), run_sessions=True, warmup=WARMUP).install(monkeypatch)
    code, out, _, report = prune(capfd, small, "--runs", "6", "--max-runs", "6")
    assert code == 0
    assert "(no measurable change: x1.000, 95% CI x0.900-1.100; 6 runs" in out
    assert "WARNING   the pruned model is not measurably faster than the original" in out
    assert report["latency"]["verdict"] == "no measurable change" and report["latency_not_faster"] is True


def test_threads_reach_every_timed_session(monkeypatch, capfd, small):
    timings = ScriptedTimings(constant(2e-3, 1e-3), run_sessions=True).install(monkeypatch)
    code, out, _, report = prune(capfd, small, "--runs", "4", "--threads", "3")
    assert code == 0 and "4 runs, 3 threads)" in out
    options = {id(s): s.get_session_options() for _, s in timings.calls}
    assert len(options) == 2  # the original's validation session is reused for timing
    assert {(o.intra_op_num_threads, o.inter_op_num_threads) for o in options.values()} == {(3, 3)}
    assert report["latency"]["threads"] == 3 and report["options"]["latency"]["threads"] == 3


def test_the_latency_limits_reach_the_measurement(monkeypatch, capfd, small):
    ScriptedTimings(paired(1.0, (0.5, 1.5)), warmup=WARMUP).install(monkeypatch)
    code, out, _, report = prune(capfd, small, "--runs", "3", "--latency-time", "20")
    assert code == 0 and report["latency"]["stopped_by"] == "time limit"
    assert report["latency"]["seconds"] >= 20 and "stopped at the time limit" in out


def test_runs_zero_measures_no_latency(monkeypatch, capfd, small):
    timings = ScriptedTimings(constant(1e-3, 2e-3)).install(monkeypatch)
    code, out, _, report = prune(capfd, small, "--runs", "0")
    assert code == 0 and timings.calls == [] and "latency" not in out and "WARNING" not in out
    assert report["latency"] is None and report["latency_not_faster"] is None and report["latency_ratio"] is None


@pytest.mark.parametrize("args, fragment", [
    (["--threads", "0"], "--threads must be >= 1"), (["--runs", "-1"], "--runs must be >= 0"),
    (["--runs", "50", "--max-runs", "10"], "--max-runs must be >= --runs"),
    (["--latency-time", "0"], "--latency-time must be > 0"), (["--latency-spread", "2"], "--latency-spread")])
def test_bad_latency_options_are_one_line_errors(capfd, small, args, fragment):
    code, out, err, _ = prune(capfd, small, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and fragment in err and "Traceback" not in err
    assert not (small.parent / "out.onnx").exists()
