"""--target-latency over depth and width, the per-step latency breakdown, and what the summary says went.

Real timings run here (tiny budgets) but nothing is asserted on them: the choices are tested with injected
timings in tests/engine/test_depthwidth.py and test_attribution.py."""
import json

import numpy as np
import onnx
import onnxruntime as ort

from support.architectures import ARCHITECTURES
from support.cli import call

FAST = ["--runs", "4", "--latency-time", "0.3", "-q"]


def _save(tmp_path, name="resnet_basic"):
    path = tmp_path / f"{name}.onnx"
    onnx.save(ARCHITECTURES[name](), path)
    return path


def _outputs(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_depth_alone_says_blocks_went_and_saves_no_empty_channel_step(tmp_path, capfd):
    model, out, plan = _save(tmp_path), tmp_path / "out.onnx", tmp_path / "plan.json"
    code, stdout, err = call(capfd, [model, out, "--depth", "1", "--runs", "0", "--save-plan", plan, "-q"])
    assert code == 0, err
    assert "removed   1 residual block\n" in stdout and "channels" not in stdout.split("removed")[-1].split("\n")[0]
    assert [s["kind"] for s in json.loads(plan.read_text())["steps"]] == ["blocks"]


def test_the_report_breaks_the_latency_down_per_step(tmp_path, capfd):
    model, out, report = _save(tmp_path), tmp_path / "out.onnx", tmp_path / "report.json"
    code, stdout, err = call(capfd, [model, out, "--depth", "1", "--ratio", "0.5", "--fuse", "--report", report,
                                     "-v", *FAST])
    assert code == 0, err
    assert "removed   1 residual block, " in stdout
    rows = json.loads(report.read_text())["speed"]
    assert [r["step"] for r in rows] == ["blocks", "channels", "fuse"]
    for row in rows:
        low, high = row["latency_ratio"]["ratio_ci95"]
        assert low <= row["latency_ratio"]["ratio"] <= high and row["macs"] > 0 and -1 <= row["cosine"] <= 1
    assert rows[0]["items"][0]["join"] and rows[-1]["macs_change"] == 0  # fusion keeps the MACs here
    lines = stdout.splitlines()
    at = next(k for k, line in enumerate(lines) if line.startswith("speed by"))
    assert lines[at - 1].startswith("latency ") and "1 block x" in lines[at] and "fuse x" in lines[at]
    assert any(line.strip().startswith("block at ") for line in lines)  # -v: the items


def test_no_breakdown_without_timing(tmp_path, capfd):
    model = _save(tmp_path)
    for flags in (["--runs", "0"], ["--no-validate"]):
        report = tmp_path / "report.json"
        code, stdout, err = call(capfd, [model, tmp_path / "out.onnx", "--depth", "1", "--ratio", "0.5", "--report",
                                         report, "-q", *flags])
        assert code == 0, err
        assert json.loads(report.read_text())["speed"] is None and "speed by" not in stdout


def test_target_latency_saves_the_chosen_depth_and_width_and_re_applies(tmp_path, capfd):
    model, out, plan, report = _save(tmp_path), tmp_path / "out.onnx", tmp_path / "plan.json", tmp_path / "r.json"
    code, stdout, err = call(capfd, [model, out, "--target-latency", "0.6", "--save-plan", plan, "--report", report,
                                     *FAST])
    assert code == 0, err
    data = json.loads(report.read_text())
    search = data["budget"][0]["depth_width"]
    assert search["candidates"]  # which depths made it depends on the real timings
    chosen = search["candidates"][search["chosen"]]
    assert len((data["blocks"] or {}).get("removed", [])) == chosen["depth"]
    assert "searched  " in stdout and "<- chosen" in stdout
    saved = json.loads(plan.read_text())
    kinds = [s["kind"] for s in saved["steps"]] if "steps" in saved else ["channels"]
    assert kinds == (["blocks"] if chosen["depth"] else []) + (["channels"] if chosen["channels"] else [])
    again = tmp_path / "again.onnx"
    code, _, err = call(capfd, ["apply", plan, model, again, "--runs", "0", "-q"])
    assert code == 0, err
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    for a, b in zip(_outputs(out, feeds), _outputs(again, feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_no_depth_search_keeps_width_only(tmp_path, capfd):
    model, report = _save(tmp_path), tmp_path / "r.json"
    code, _, err = call(capfd, [model, tmp_path / "out.onnx", "--target-latency", "0.8", "--no-depth-search",
                                "--report", report, *FAST])
    assert code == 0, err
    data = json.loads(report.read_text())
    assert "depth_width" not in data["budget"][0] and data["blocks"] is None
