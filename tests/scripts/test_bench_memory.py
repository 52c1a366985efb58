"""Smoke test of scripts/bench_memory.py: a tiny model, every configuration runs and is measured."""
import re
import sys
from pathlib import Path
from support.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_memory.py"


def test_every_configuration_runs_and_reports_its_peak(capsys):
    bench = load_script("bench_memory")
    assert bench.main(["--mb", "2", "--width", "256"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if re.match(r"(analyze|prune)", line)]
    assert len(rows) == 3
    for row in rows:
        assert "exit" not in row, row  # every child succeeded
        peak = re.search(r"\s(\d+) M\s", row)
        assert peak and int(peak.group(1)) > 0, row
