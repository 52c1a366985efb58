"""No silent harm at exit 0: what used to pass quietly is now refused or said loudly, through the CLI.

Defects (issue 14): an output in a missing folder created the folder; --calib arrays the model does not
use were ignored without a word; a prune at 0.99 reported cosine 0.0000 as "valid" at exit 0;
sensitivity --suggest suggested 0 for every unit and --ratio-from then wrote an unchanged model;
--plot x.jpg wrote PNG bytes.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from onnxprune.errors import EXIT_BAD_INPUT, EXIT_FIDELITY, EXIT_NOTHING_TO_PRUNE, EXIT_USAGE
from support.small_models import conv_chain, save
from support.cli import call


def assert_one_line(code, expected_code, out, err, *fragments):
    assert code == expected_code, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def small(tmp_path, monkeypatch):
    """conv_chain (input [1, 3, 8, 8]) alone in the folder the test runs in."""
    monkeypatch.chdir(tmp_path)
    return Path(save(conv_chain(), tmp_path / "small.onnx"))


def folder_content(path="."):
    return sorted(str(p) for p in Path(path).rglob("*"))


# ----------------------------------------------------------------------------- missing folders
@pytest.mark.parametrize("args,fragment", [
    (["small.onnx", "new/out.onnx"], "output new/out.onnx: the folder new does not exist (--mkdir creates it)"),
    (["small.onnx", "out.onnx", "--report", "a/b/r.json"], "--report a/b/r.json: the folder a/b does not exist"),
    (["small.onnx", "out.onnx", "--save-plan", "plans/p.json"], "--save-plan plans/p.json: the folder plans"),
    (["analyze", "small.onnx", "--report", "new/r.json"], "--report new/r.json: the folder new does not exist"),
    (["sensitivity", "small.onnx", "--plot", "plots/s.png"], "--plot plots/s.png: the folder plots does not"),
])
def test_a_missing_output_folder_is_refused_without_mkdir(small, capfd, args, fragment):
    code, out, err = call(capfd, ["-q", *args, "--runs", "0"] if "sensitivity" not in args and "analyze" not in args
                          else ["-q", *args])
    assert_one_line(code, EXIT_BAD_INPUT, out, err, fragment)
    assert folder_content() == ["small.onnx"]
    code, _, err = call(capfd, ["-q", *args, "--mkdir"] + ([] if "sensitivity" in args or "analyze" in args
                                                           else ["--runs", "0"]))
    assert code == 0, err
    written = [a for a in args if "/" in a][0]
    assert Path(written).is_file()


# ----------------------------------------------------------------------------- --calib arrays
def test_unused_calib_arrays_are_a_warning_in_summary_report_and_sensitivity(small, capfd):
    rng = np.random.default_rng(0)
    np.savez("calib.npz", input=rng.standard_normal((10, 3, 8, 8)).astype(np.float32),
             imput=rng.standard_normal((10, 3, 8, 8)).astype(np.float32), mask=np.ones((10, 4), np.float32))
    expected = "--calib calib.npz: array(s) imput, mask are no model input and were not used (model inputs: input)"
    code, out, err = call(capfd, ["-q", "small.onnx", "out.onnx", "--calib", "calib.npz", "--criterion", "output",
                                  "--runs", "0", "--report", "r.json"])
    assert code == 0, err
    assert f"WARNING   {expected}" in out.splitlines()
    assert expected in json.loads(Path("r.json").read_text())["warnings"]
    code, out, err = call(capfd, ["-q", "sensitivity", "small.onnx", "--calib", "calib.npz", "--ratios", "0.5"])
    assert code == 0, err
    assert out.splitlines()[-1] == f"WARNING   {expected}"
    # the same data without the extra arrays: no warning
    np.savez("calib2.npz", input=rng.standard_normal((10, 3, 8, 8)).astype(np.float32))
    code, out, err = call(capfd, ["-q", "small.onnx", "out2.onnx", "--calib", "calib2.npz", "--runs", "0",
                                  "--report", "r2.json"])
    assert code == 0 and "WARNING" not in out and json.loads(Path("r2.json").read_text())["warnings"] == []


# ----------------------------------------------------------------------------- --min-cosine
def prune_report(capfd, *options):
    code, out, err = call(capfd, ["-q", "small.onnx", "out.onnx", "--runs", "0", "--json", *options])
    return code, (json.loads(out) if code == 0 else None), err


def test_fidelity_below_min_cosine_is_a_loud_warning_and_an_error_with_strict(small, capfd):
    code, report, err = prune_report(capfd, "--ratio", "0.9")
    assert code == 0, err
    cosine = report["fidelity"]["cosine_worst_output"]
    assert 0.0 < cosine < 1.0
    # the warning shows exactly when the measured cosine is below the threshold
    for threshold, warned in ((cosine + 1e-3, True), (cosine - 1e-3, False)):
        code, report, err = prune_report(capfd, "--ratio", "0.9", "--min-cosine", f"{threshold:.6f}")
        assert code == 0, err
        assert [w.startswith(f"fidelity cosine {cosine:.4f} is below --min-cosine") for w in report["warnings"]] \
            == ([True] if warned else [])
    os.remove("out.onnx")
    code, out, err = call(capfd, ["-q", "small.onnx", "out.onnx", "--runs", "0", "--ratio", "0.9",
                                  "--min-cosine", f"{cosine + 1e-3:.6f}"])
    assert code == 0 and out.splitlines()[-1].startswith(f"WARNING   fidelity cosine {cosine:.4f} is below")
    os.remove("out.onnx")
    code, out, err = call(capfd, ["-q", "small.onnx", "out.onnx", "--runs", "0", "--ratio", "0.9", "--strict",
                                  "--min-cosine", f"{cosine + 1e-3:.6f}", "--report", "r.json"])
    assert_one_line(code, EXIT_FIDELITY, out, err, f"fidelity cosine {cosine:.4f} is below --min-cosine",
                    "nothing written (--strict)")
    assert folder_content() == ["small.onnx"]


def test_default_min_cosine_flags_a_destroyed_model_not_a_mild_prune(small, capfd):
    code, report, err = prune_report(capfd, "--ratio", "0.99")
    assert code == 0, err
    assert report["fidelity"]["cosine_worst_output"] < 0.5 and len(report["warnings"]) == 1
    code, report, err = prune_report(capfd, "--ratio", "0.1")
    assert code == 0, err
    assert report["fidelity"]["cosine_worst_output"] >= 0.5 and report["warnings"] == []


@pytest.mark.parametrize("options,fragment", [
    (["--min-cosine", "1.5"], "--min-cosine must be in [-1, 1], got 1.5"),
    (["--strict", "--no-validate"], "--strict checks the pruned model's fidelity, which --no-validate skips"),
])
def test_bad_min_cosine_options(small, capfd, options, fragment):
    code, out, err = call(capfd, ["-q", "small.onnx", "out.onnx", *options])
    assert_one_line(code, EXIT_USAGE, out, err, fragment)
    assert folder_content() == ["small.onnx"]


# ----------------------------------------------------------------------------- --suggest, --ratio-from
def test_a_suggestion_of_nothing_says_so_and_exits_non_zero(small, capfd):
    code, out, err = call(capfd, ["-q", "sensitivity", "small.onnx", "--ratios", "0.5", "--report", "sens.json"])
    assert code == 0, err
    report = json.loads(Path("sens.json").read_text())
    least = min(1 - p["cosine"] for u in report["units"] for p in u["points"])  # the smallest error measured
    budget = f"{least / 2:.3g}"  # below every measured error
    code, out, err = call(capfd, ["-q", "sensitivity", "small.onnx", "--ratios", "0.5", "--suggest", budget,
                                  "--report", "s2.json"])
    assert_one_line(code, EXIT_NOTHING_TO_PRUNE, out, err,
                    f"onnxprune: nothing to prune: --suggest {budget}: no unit stays within a cosine error of "
                    f"{budget} at any measured ratio; the smallest measured is {least:.3g}")
    assert not Path("s2.json").exists()
    code, out, err = call(capfd, ["-q", "small.onnx", "out.onnx", "--ratio-from", f"sens.json:{budget}"])
    assert_one_line(code, EXIT_NOTHING_TO_PRUNE, out, err, f"--ratio-from sens.json:{budget}: no unit stays")
    assert folder_content() == ["sens.json", "small.onnx"]
    # a budget above the smallest error suggests something: exit 0
    code, out, err = call(capfd, ["-q", "sensitivity", "small.onnx", "--ratios", "0.5", "--suggest",
                                  f"{least * 1.01:.6g}"])
    assert code == 0 and out.splitlines()[-1].startswith("suggested: --ratio-for"), err


# ----------------------------------------------------------------------------- --plot formats
MAGIC = {".png": b"\x89PNG", ".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff", ".pdf": b"%PDF", ".svg": b"<?xml"}


def test_plot_writes_the_format_its_extension_names(small, capfd):
    pytest.importorskip("matplotlib")
    names = [f"sens{suffix}" for suffix in MAGIC] + ["SENS.PNG"]
    for name in names:
        code, _, err = call(capfd, ["-q", "sensitivity", "small.onnx", "--ratios", "0.5", "--plot", name])
        assert code == 0, err
        assert Path(name).read_bytes().startswith(MAGIC[Path(name).suffix.lower()]), name
    assert folder_content() == sorted(names + ["small.onnx"])


@pytest.mark.parametrize("plot,fragment", [
    ("sens.bmp", "--plot sens.bmp: '.bmp' is no image format matplotlib writes (use one of "),
    ("sens", "--plot sens: no extension to name the image format"),
])
def test_plot_refuses_a_format_it_cannot_write(small, capfd, plot, fragment):
    pytest.importorskip("matplotlib")
    code, out, err = call(capfd, ["-q", "sensitivity", "small.onnx", "--plot", plot, "--report", "r.json"])
    assert_one_line(code, EXIT_USAGE, out, err, fragment, ".png", ".svg")
    assert folder_content() == ["small.onnx"]
