"""The README's sample output is a real run's: the block between the sample markers equals what the
command prints today, numbers aside, so it cannot go stale."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from support import PACKAGE_PARENT

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = re.compile(r"<!-- sample: (?P<command>.+?) -->\n(?P<block>.*?)<!-- end sample -->", re.S)
NUMBER = re.compile(r"\d+(\.\d+)?[KMG]?")


def _masked(lines: list[str]) -> list[str]:
    return [NUMBER.sub("N", line.rstrip()) for line in lines if line.strip()]


def test_the_readme_sample_output_is_a_fresh_runs(tmp_path):
    match = SAMPLE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md has no <!-- sample: ... --> block"
    args = shlex.split(match["command"])
    assert args[0] == "onnxprune"
    for arg in args[1:]:
        if arg.startswith("models/"):
            (tmp_path / arg).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / arg, tmp_path / arg)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "onnxprune", *args[1:], "-q"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = [line[4:] if line.startswith("    ") else line for line in match["block"].splitlines()]
    assert _masked(done.stdout.splitlines()) == _masked(printed)


def test_the_mask_still_sees_a_changed_line():
    assert _masked(["removed   360 channels in 12 groups"]) != _masked(["removed   360 channels in 12 blocks"])
    assert _masked(["params    713.80K -> 182.61K  (x0.256)"]) == _masked(["params    1.2M -> 0.5M  (x0.4)"])
