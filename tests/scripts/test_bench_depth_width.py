"""scripts/bench_depth_width.py's verdict: per model, the fastest width-only and depth prune within 1 point."""
import json
import sys
from pathlib import Path

import pytest
from support.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_depth_width.py"


@pytest.fixture(scope="module")
def bench():
    module = load_script("bench_depth_width", on_path=True)
    return module


def rows(bench):
    Row = bench.Row
    return [Row("m", "original", "original", accuracy=0.95, latency=1.0),
            Row("m", "--target-macs 0.5", "width", accuracy=0.945, latency=0.70, ci95=(0.6, 0.8)),
            Row("m", "--target-macs 0.3", "width", accuracy=0.90, latency=0.40, ci95=(0.3, 0.5)),  # 5 points lost
            Row("m", "--depth 2", "depth", blocks=2, accuracy=0.94, latency=0.75, ci95=(0.7, 0.8)),
            Row("m", "--depth 4", "depth", blocks=4, accuracy=0.939, latency=0.50, ci95=(0.4, 0.6)),  # 1.1 points
            Row("m", "--depth 1", "depth", blocks=1, error="PlanError: x"),
            Row("n", "original", "original", accuracy=1.0, latency=1.0),
            Row("n", "--target-macs 0.5", "width", accuracy=1.0, latency=0.6, ci95=(0.5, 0.7))]


def test_picks_the_fastest_within_one_point_per_family(bench):
    chosen = bench.picks(rows(bench))
    base, width, depth = chosen["m"]
    assert (base.name, width.name, depth.name) == ("original", "--target-macs 0.5", "--depth 2")
    assert chosen["n"][1].name == "--target-macs 0.5" and chosen["n"][2] is None


def test_table_and_verdicts_from_saved_results(bench, tmp_path, capsys):
    import dataclasses
    saved = tmp_path / "results.json"
    duel = {"width": "--target-macs 0.5", "depth": "--depth 2", "ratio": 1.07, "ci95": [1.01, 1.12],
            "verdict": "slower", "runs": 40, "load": "1.0/1.0"}
    saved.write_text(json.dumps({"rows": [dataclasses.asdict(r) for r in rows(bench)], "duels": {"m": duel}}))
    assert bench.main(["--table-from", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "| m | `--depth 4` | 4 |" in out and "failed: PlanError: x" in out
    assert "fastest width-only: `--target-macs 0.5` x0.700" in out
    assert "fastest with depth:  `--depth 2` x0.750" in out and "depth SLOWER than width-only" in out
    assert "n (original 100.00%" in out and "no prune with removed blocks was run" in out
