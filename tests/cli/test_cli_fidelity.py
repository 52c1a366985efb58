"""Every prune reports output fidelity: held-out calibration samples, or random inputs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx

from support.small_models import conv_chain


def _prune(tmp_path, *extra):
    model = tmp_path / "m.onnx"
    onnx.save(conv_chain(batch="N"), str(model))
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "onnxprune", str(model), str(tmp_path / "out.onnx"), "-q",
                           "--report", str(report), *extra], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(report.read_text())


def test_random_inputs_without_calibration_data(tmp_path):
    out, report = _prune(tmp_path, "--ratio", "0.5")
    fidelity = report["fidelity"]
    assert fidelity["samples"] == 8 and fidelity["data"] == "random inputs"
    assert 0 < fidelity["cosine_worst_output"] < 1 and fidelity["top1"] is not None
    assert "fidelity  cosine" in out and "(8 random inputs)" in out


def test_held_out_calibration_samples_with_calib(tmp_path):
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((20, 3, 8, 8)).astype(np.float32))
    out, report = _prune(tmp_path, "--ratio", "0.0001", "--calib", str(tmp_path / "calib.npz"))
    assert report["fidelity"]["samples"] == 4 and report["fidelity"]["data"] == "held-out calibration samples"
    assert "(4 held-out calibration samples)" in out


def test_data_driven_criteria_score_only_the_samples_fidelity_is_not_measured_on(tmp_path):
    """Channel 0 is weak on the fit part of --calib and huge on the held-out part: scored on
    the fit part only, it is the channel removed (scored on all samples it would be kept)."""
    from onnxprune.calibration import CalibrationSet
    from support.builder import GraphBuilder

    b = GraphBuilder(seed=3)
    x = b.input("input", ["N", 4, 8, 8])
    y = b.relu(b.op("Conv", [x, b.param(np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1))], kernel_shape=[1, 1]))
    b.output(b.rename(b.conv(y, 3, k=1, pad=0), "output"))
    model = tmp_path / "m.onnx"
    onnx.save(b.build(), str(model))
    samples = np.ones((20, 4, 8, 8), np.float32)
    fit, held = CalibrationSet({"input": np.arange(20)}).split(0.2, 0)
    samples[fit.arrays["input"], 0] = 0.1
    samples[held.arrays["input"], 0] = 1000.0
    np.savez(tmp_path / "calib.npz", input=samples)
    plan = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "onnxprune", str(model), str(tmp_path / "out.onnx"), "-q",
                           "--ratio", "0.25", "--criterion", "activation", "--calib", str(tmp_path / "calib.npz"),
                           "--save-plan", str(plan)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    decisions = [d for d in json.loads(plan.read_text())["decisions"] if d["removed"]]
    assert [d["removed"] for d in decisions] == [[0]]
