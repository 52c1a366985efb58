"""``--recover``: needs --calib (checked before any work); summary and report show fidelity."""
import json
from pathlib import Path

from onnxprune.cli import main

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"


def test_recover_without_calib_is_one_line_and_writes_nothing(tmp_path, capfd):
    out = tmp_path / "out.onnx"
    code = main([str(DIGITS / "digits_cnn.onnx"), str(out), "--recover"])
    _, err = capfd.readouterr()
    assert code != 0 and err.splitlines() == [
        "onnxprune: error: --recover re-fits the pruned model on calibration data: give --calib FILE.npz"]
    assert not out.exists()


def test_unknown_recovery_method_fails_before_loading(tmp_path, capfd):
    code = main([str(tmp_path / "missing.onnx"), str(tmp_path / "out.onnx"), "--recover", "--calib",
                 str(DIGITS / "calib.npz"), "--recover-methods", "bn,magic"])
    _, err = capfd.readouterr()
    assert code != 0 and len(err.splitlines()) == 1 and "magic" in err and "bias, lstsq, bn" in err


def test_recover_reports_fidelity_before_and_after_and_the_time(tmp_path, capfd):
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    code = main([str(DIGITS / "digits_cnn.onnx"), str(out), "--ratio", "0.3", "--calib", str(DIGITS / "calib.npz"),
                 "--criterion", "l2", "--recover", "--recover-methods", "bn", "--report", str(report), "-q", "--runs", "1"])
    stdout, _ = capfd.readouterr()
    assert code == 0 and out.exists()
    assert "recovery  bn on 205 samples" in stdout and "(recovered)" in stdout and "(pruned, 51 held-out" in stdout
    data = json.loads(report.read_text())["recovery"]
    assert data["kept"] and data["methods"] == ["bn"] and data["seconds"] > 0
    assert data["fidelity_after"]["cosine_worst_output"] > data["fidelity_before"]["cosine_worst_output"]
    assert data["fidelity_after"]["top1"] > data["fidelity_before"]["top1"]


def test_recovery_runs_after_every_round_of_steps(tmp_path, capfd):
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    code = main([str(DIGITS / "digits_cnn.onnx"), str(out), "--ratio", "0.3", "--round-to", "1", "--steps", "2",
                 "--calib", str(DIGITS / "calib.npz"), "--criterion", "l2", "--recover", "--recover-methods", "bn",
                 "--report", str(report), "-q",
                 "--no-validate"])
    stdout, _ = capfd.readouterr()
    assert code == 0 and "after each of 2 rounds" in stdout
    data = json.loads(report.read_text())["recovery"]
    assert len(data["rounds"]) == 2 and all(r["passes"][0]["changed"] > 0 for r in data["rounds"])
    assert data["seconds"] == sum(r["seconds"] for r in data["rounds"])
