"""Smoke test of scripts/bench_transformers.py (the architecture table) on two committed tiny exports."""
import json
import sys
from pathlib import Path
from support.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_transformers.py"


def _bench():
    module = load_script("bench_transformers")
    return module


def test_table_counts_groups_by_kind_and_measures_both_options(tmp_path, capsys):
    models = [str(ROOT / "tests" / "models" / f) for f in ("bert_ts.onnx", "gru_dynamo.onnx")]
    out = tmp_path / "table.json"
    assert _bench().main(models + ["--runs", "2", "--latency-time", "0.5", "--length", "9", "--json", str(out)]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    bert, gru = rows["bert_ts"], rows["gru_dynamo"]
    assert bert["groups"] == {"heads": 2, "mlp": 3, "hidden": 1}
    assert gru["groups"] == {"rnn": 2, "mlp": 1}  # the two GRUs' hidden units; the projection feeding them
    assert bert["default"]["macs"] <= 0.51 and bert["hidden"]["macs"] <= 0.30
    assert bert["hidden"]["params"] < bert["default"]["params"] < 1
    assert gru["hidden"]["macs"] == gru["default"]["macs"] <= 0.3  # no hidden-size group to add
    assert all(r[k]["latency"] > 0 for r in rows.values() for k in ("default", "hidden"))
    table = capsys.readouterr().out
    assert "| bert_ts | 9 | 2 | 3 | 1 | 0 |" in table and "| gru_dynamo | 9 | 0 | 1 | 0 | 2 |" in table
