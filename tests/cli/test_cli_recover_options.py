"""``--recover-weighting`` and ``--recover-passes``: the RecoveryOptions fields they set reach the
re-fit (the report records them, and the written model is the one those options fit)."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from support.cli import call
from support.masked_tokens import masked_data, masked_model
from support.oracle import run

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"


def _prune(capfd, model, out, calib, *more):
    report = out.with_suffix(".json")
    code, stdout, err = call(capfd, [model, out, "--ratio", "0.5", "--round-to", "1", "--criterion", "l2",
                                     "--calib", calib, "--recover", "--recover-methods", "lstsq", "--report", report,
                                     "-q", "--runs", "0", *more])
    assert code == 0, err
    return json.loads(report.read_text())


def test_weighting_none_fits_padding_like_real_tokens_and_auto_does_not(tmp_path, capfd):
    model = tmp_path / "masked.onnx"
    onnx.save(masked_model(), model)
    np.savez(tmp_path / "calib.npz", **masked_data(60, 1))
    held = masked_data(40, 2)
    reference = run(onnx.load(model), held)[0]
    errors, reports = {}, {}
    for mode in ("auto", "none"):
        out = tmp_path / f"{mode}.onnx"
        reports[mode] = _prune(capfd, model, out, tmp_path / "calib.npz", "--recover-weighting", mode)
        assert reports[mode]["recovery"]["kept"]
        errors[mode] = float(np.linalg.norm(run(onnx.load(out), held)[0] - reference))
    assert reports["auto"]["options"]["recovery"]["weighting"] == "auto"
    assert reports["none"]["options"]["recovery"]["weighting"] == "none"
    # the output is zero at padding: rows there are noise to the fit, weighed down by auto
    assert errors["auto"] < 0.95 * errors["none"], errors


def test_passes_choose_the_per_level_or_the_one_pass_fit(tmp_path, capfd):
    outputs, reports = {}, {}
    for passes in (0, 1):
        out = tmp_path / f"p{passes}.onnx"
        reports[passes] = _prune(capfd, DIGITS / "digits_cnn.onnx", out, DIGITS / "calib.npz",
                                 "--recover-passes", passes, "--no-validate")
        outputs[passes] = onnx.load(out)
        assert reports[passes]["options"]["recovery"]["passes"] == passes
        assert reports[passes]["recovery"]["passes"][0]["changed"] > 1
    feeds = {"input": np.load(DIGITS / "heldout.npz")["input"][:16]}
    a, b = run(outputs[0], feeds)[0], run(outputs[1], feeds)[0]
    assert not np.allclose(a, b, atol=1e-5)  # one pass fits every layer from the original's inputs: other weights


@pytest.mark.parametrize("flag,value,words", [("--recover-passes", "-1", "--recover-passes must be >= 0"),
                                              ("--recover-weighting", "blank", "invalid choice")])
def test_bad_recovery_options_fail_in_one_line_before_loading(tmp_path, capfd, flag, value, words):
    out = tmp_path / "out.onnx"
    code, _, err = call(capfd, [tmp_path / "missing.onnx", out, "--calib", DIGITS / "calib.npz", "--recover",
                                flag, value])
    assert code != 0 and len(err.strip().splitlines()) == 1 and words in err, err
    assert not out.exists()
