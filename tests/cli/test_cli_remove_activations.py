"""``--remove-activations N``: needs --calib (one line, before any work), reports what it removed
and merged, writes a valid model, and its saved plan re-applies."""
import json

import numpy as np
import onnx

from support.architectures import ARCHITECTURES
from support.cli import call
from support.oracle import random_feeds, run


def _files(tmp_path, name="vgg_flatten_gemm"):
    model = ARCHITECTURES[name]()
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    feeds = random_feeds(model)
    (x,) = feeds
    calib = tmp_path / "calib.npz"
    shape = (24,) + feeds[x].shape[1:]
    np.savez(calib, **{x: np.random.default_rng(0).standard_normal(shape).astype(np.float32)})
    return model, path, calib


def test_remove_activations_merges_layers_and_reports_them(tmp_path, capfd):
    model, path, calib = _files(tmp_path)
    out, report, plan = tmp_path / "out.onnx", tmp_path / "r.json", tmp_path / "plan.json"
    code, stdout, err = call(capfd, [path, out, "--remove-activations", "1", "--calib", calib, "--recover",
                                     "-q", "--runs", "0", "--report", report, "--save-plan", plan])
    assert code == 0, err
    assert "updp      removed 1 of 1 activations between two layers" in stdout
    data = json.loads(report.read_text())
    (removed,) = data["activations"]["removed"]
    assert removed["op"] == "Relu" and data["activations"]["merged"] >= 1
    assert data["options"]["remove_activations"] == 1 and data["options"]["ratio"] == 0.0
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    assert removed["node"] not in [n.name for n in written.graph.node]
    assert len(written.graph.node) < len(model.graph.node)
    again = tmp_path / "again.onnx"
    code, _, err = call(capfd, ["apply", plan, path, again, "-q", "--runs", "0"])
    assert code == 0, err
    feeds = random_feeds(model)
    assert len(onnx.load(again).graph.node) == len(written.graph.node)
    assert [o.shape for o in run(onnx.load(again), feeds)] == [o.shape for o in run(model, feeds)]


def test_remove_activations_needs_calib_before_any_work(tmp_path, capfd):
    _, path, _ = _files(tmp_path)
    code, _, err = call(capfd, [path, tmp_path / "out.onnx", "--remove-activations", "1"])
    assert code == 2 and err.strip().splitlines() == [
        "onnxprune: error: --remove-activations chooses activations on data: give --calib FILE.npz"]
    code, _, err = call(capfd, [path, tmp_path / "out.onnx", "--remove-activations", "1.5", "--calib", "x.npz"])
    assert code == 2 and "--remove-activations must be a count" in err and not (tmp_path / "out.onnx").exists()
