"""Smoke test of scripts/bench_latency_check.py: both figures, with their spreads, for a pair of files.

Structure only: the figures themselves are timings of this machine (the goal lives in the benchmark)."""
import json
import sys
from pathlib import Path

from onnxprune import Pruner
from support.small_models import conv_chain, save
from support.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_latency_check.py"


def _script():
    module = load_script("bench_latency_check")
    return module


def test_a_pair_gets_the_summary_figure_and_an_independent_one(tmp_path, capsys):
    original = save(conv_chain(), tmp_path / "a.onnx")
    pruner = Pruner.load(original)
    pruner.prune(ratio=0.5)
    pruner.save(tmp_path / "b.onnx")
    out = tmp_path / "rows.json"
    assert _script().main([f"{original}:{tmp_path / 'b.onnx'}", "--seconds", "0.2", "--json", str(out),
                           "--", "--runs", "4", "--latency-time", "0.2"]) == 0
    [row] = json.loads(out.read_text())
    summary, independent = row["summary"], row["independent"]
    assert summary["threads"] == 1 and summary["runs"] >= 4 and summary["ratio_ci95"][0] <= summary["ratio"]
    assert independent["runs"] >= 20 and independent["ci95"][0] <= independent["ratio"] <= independent["ci95"][1]
    table = capsys.readouterr().out
    assert "| a.onnx : b.onnx | x" in table and "0.2s" in table and "--latency-time 0.2" in table
