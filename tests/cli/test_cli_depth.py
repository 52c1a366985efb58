"""``--depth N`` and ``analyze``'s block list: text, JSON, errors before work."""
import json

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.cli import main
from support.architectures import ARCHITECTURES


def _save(tmp_path, name):
    path = tmp_path / f"{name}.onnx"
    onnx.save(ARCHITECTURES[name](), path)
    return path


def test_analyze_lists_blocks_in_text_and_json(tmp_path, capfd):
    model, report = _save(tmp_path, "resnet_bottleneck"), tmp_path / "report.json"
    assert main(["analyze", str(model), "-q", "--report", str(report)]) == 0
    out, _ = capfd.readouterr()
    assert "blocks    1 removable residual blocks" in out and "2 other joins not removable" in out
    assert "join Add_1  skip Relu_3  8 nodes" in out
    blocks = json.loads(report.read_text())["blocks"]
    (found,) = blocks["found"]
    assert found["join"] == "Add_1" and found["skip"] == "Relu_3" and found["nodes"] == 8
    assert 0 < found["macs_share"] < 1 and 0 < found["params_share"] < 1 and found["score"] > 0
    assert {r["join"] for r in blocks["refused"]} == {"Add_0", "Add_2"} and blocks["note"] is None


def test_analyze_says_why_densenet_has_none(tmp_path, capfd):
    assert main(["analyze", str(_save(tmp_path, "densenet")), "-q"]) == 0
    out, _ = capfd.readouterr()
    assert "blocks    none removable: no residual joins" in out


def test_depth_alone_removes_blocks_only_and_reports_them(tmp_path, capfd):
    model, out, report = _save(tmp_path, "resnet_basic"), tmp_path / "out.onnx", tmp_path / "r.json"
    code = main([str(model), str(out), "--depth", "2", "-q", "--runs", "1", "--report", str(report)])
    stdout, _ = capfd.readouterr()
    assert code == 0 and "depth     removed 2 of 3 residual blocks (lowest weights score)" in stdout
    data = json.loads(report.read_text())
    assert data["channels_removed"] == 0 and data["options"]["depth"] == 2 and data["options"]["ratio"] == 0
    removed = data["blocks"]["removed"]
    assert len(removed) == 2 and all(0 < b["macs_share"] < 1 for b in removed)
    assert abs(data["macs_ratio"] - (1 - sum(b["macs_share"] for b in removed))) < 1e-9
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})[0].shape == (1, 10)


def test_depth_with_calib_ratio_and_recover(tmp_path, capfd):
    model, out, report = _save(tmp_path, "mobilenetv2"), tmp_path / "out.onnx", tmp_path / "r.json"
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((30, 3, 32, 32)).astype(np.float32))
    code = main([str(model), str(out), "--depth", "1", "--ratio", "0.5", "--calib", str(calib), "--recover",
                 "-q", "--runs", "1", "--report", str(report)])
    stdout, _ = capfd.readouterr()
    assert code == 0 and "(lowest output score)" in stdout
    data = json.loads(report.read_text())
    assert data["channels_removed"] > 0 and len(data["blocks"]["removed"]) == 1
    assert set(data["blocks"]["removed"][0]["scores"]) == {"weights", "influence", "output"}
    assert data["recovery"]["passes"][1]["changed"] > 0


def test_depth_on_a_model_without_blocks_is_one_line(tmp_path, capfd):
    out = tmp_path / "out.onnx"
    code = main([str(_save(tmp_path, "densenet")), str(out), "--depth", "1", "-q"])
    _, err = capfd.readouterr()
    assert code != 0 and err.splitlines() == [
        f"onnxprune: nothing to prune: {tmp_path / 'densenet.onnx'}: --depth: no residual joins (no node adds "
        "two activations; a concatenation is no skip path)"]
    assert not out.exists()


def test_data_scores_need_calib_before_any_work(tmp_path, capfd):
    code = main([str(tmp_path / "missing.onnx"), str(tmp_path / "out.onnx"), "--depth", "1",
                 "--depth-score", "influence"])
    _, err = capfd.readouterr()
    assert code != 0 and err.splitlines() == [
        "onnxprune: error: --depth-score influence scores blocks on data: give --calib FILE.npz"]
    code = main([str(tmp_path / "missing.onnx"), str(tmp_path / "out.onnx"), "--depth", "-1"])
    _, err = capfd.readouterr()
    assert code != 0 and "--depth must be >= 0" in err
