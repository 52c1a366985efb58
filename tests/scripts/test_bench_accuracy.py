"""Smoke test of scripts/bench_accuracy.py on the committed digits model (in-process, no plot)."""
import json
import sys
from pathlib import Path

import pytest

from support import digits
from support.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_accuracy.py"


@pytest.fixture(scope="module")
def bench():
    module = load_script("bench_accuracy")
    return module


def test_quick_run_reaches_the_macs_target_and_measures_accuracy(bench, tmp_path, capsys):
    code = bench.main(["--quick", "--criteria", "l2", "random", "--no-recovery", "--no-plot",
                       "--out-dir", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    unpruned = [r for r in rows if r["target"] is None]
    pruned = [r for r in rows if r["target"] is not None]
    assert [r["model"] for r in unpruned] == ["digits"]
    assert unpruned[0]["accuracy"] == pytest.approx(digits.accuracy(digits.model()))
    assert sorted(r["criterion"] for r in pruned) == ["l2", "random"]
    for r in pruned:
        assert r["target"] == 0.5 and abs(r["macs_ratio"] - 0.5) <= 0.02
        assert 0.0 <= r["accuracy"] <= 1.0 and -1.0 <= r["cosine"] <= 1.0
        assert not r["error"]
    table = capsys.readouterr().out
    assert "| digits | unpruned |" in table and "| digits | l2 | none | 0.5 |" in table


def test_budgets_side_by_side_and_the_sensitivity_budget_is_the_more_accurate(bench, tmp_path):
    code = bench.main(["--quick", "--criteria", "output", "--no-recovery", "--no-plot", "--budgets", "uniform",
                       "sensitivity", "--out-dir", str(tmp_path)])
    assert code == 0
    rows = {r["budget"]: r for r in json.loads((tmp_path / "results.json").read_text()) if r["target"] is not None}
    assert set(rows) == {"uniform", "sensitivity"}
    assert all(abs(r["macs_ratio"] - 0.5) <= 0.02 for r in rows.values())
    assert rows["sensitivity"]["accuracy"] > rows["uniform"]["accuracy"]  # measured: 0.76 against 0.18


def test_ratio_search_finds_the_ratio_closest_to_the_target(bench):
    from onnxprune import Pruner
    load = lambda: Pruner.from_model(digits.model())  # noqa: E731
    search = bench.RatioSearch(load, load().macs())
    for target in (0.7, 0.3):
        ratio = search.ratio_for(target)
        assert abs(search.macs_ratio(ratio) - target) <= 0.02
    assert search.ratio_for(0.7) < search.ratio_for(0.3)


def test_a_model_set_that_fails_is_recorded_and_the_others_still_run(bench, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not a model")
    sets = [bench.ModelSet("broken", broken, {"model": "model.onnx", "input": "input", "heldout": {}}),
            bench.ModelSet.find(["digits"])[0]]
    logged = []
    rows = bench.Bench(sets, ["l2"], (0.5,), {"none": None}, log=logged.append).run()
    failed = [r for r in rows if r.model == "broken"]
    assert len(failed) == 1 and failed[0].error and logged
    ran = [r for r in rows if r.model == "digits" and r.target == 0.5]
    assert len(ran) == 1 and not ran[0].error and ran[0].accuracy > 0
    assert "| broken | failed: " in bench.table(rows)
