"""The best path is the default path: without --criterion, the criterion follows the data given.

README (Recovery): with --calib, reconstruction + --recover is the recommended pair (reconstruction
assumes the re-fit recovery does); on --calib data without recovery, output; without data, l2.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from onnxprune.cli import main
from support.small_models import conv_chain, save


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save(conv_chain(), "m.onnx")
    np.savez("calib.npz", input=np.random.default_rng(0).standard_normal((20, 3, 8, 8)).astype(np.float32))
    return tmp_path


def prune(capfd, name, *options):
    """(criterion in the report, removed channels per group) of one prune."""
    code = main(["-q", "m.onnx", f"{name}.onnx", "--ratio", "0.5", "--runs", "0", "--report", f"{name}.json",
                 *options])
    assert code == 0, capfd.readouterr().err
    report = json.loads(Path(f"{name}.json").read_text())
    return report["options"]["criterion"], {d["group"]: d["removed"] for d in report["decisions"]}


@pytest.mark.parametrize("options,expected", [
    ([], "l2"),
    (["--calib", "calib.npz"], "output"),
    (["--calib", "calib.npz", "--recover"], "reconstruction"),
])
def test_default_criterion_follows_calib_and_recover(folder, capfd, options, expected):
    criterion, removed = prune(capfd, "default", *options)
    assert criterion == expected
    # the same plan as naming it
    assert prune(capfd, "named", *options, "--criterion", expected) == (expected, removed)


def test_a_named_criterion_still_wins_over_the_default(folder, capfd):
    assert prune(capfd, "l2", "--calib", "calib.npz", "--recover", "--criterion", "l2")[0] == "l2"


@pytest.mark.parametrize("options,expected", [([], "l2"), (["--calib", "calib.npz"], "output")])
def test_sensitivity_default_criterion(folder, capfd, options, expected):
    code = main(["-q", "sensitivity", "m.onnx", "--ratios", "0.5", "--report", "s.json", *options])
    assert code == 0, capfd.readouterr().err
    assert json.loads(Path("s.json").read_text())["criterion"] == expected
