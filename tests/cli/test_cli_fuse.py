"""``onnxprune fuse IN OUT`` and ``prune --fuse``: a valid model that computes what the input
does, a summary and report of what merged and what was refused, one-line failures that write nothing."""
import json
from pathlib import Path

import numpy as np
import onnx

from onnxprune import api
from onnxprune.cli import main
from support.architectures import ARCHITECTURES
from support.oracle import random_feeds, run
from support.small_models import repvgg_block


def call(capfd, *args):
    code = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err


def one_line_error(code, err, *fragments):
    lines = err.splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("onnxprune: error: "), err
    assert all(f in lines[0] for f in fragments), (fragments, lines[0])


def test_fuse_writes_an_exact_model_and_reports_what_merged(tmp_path, capfd):
    model = repvgg_block()
    source, out, report = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(model, source)
    code, text, err = call(capfd, "fuse", source, out, "--report", report, "-q", "--runs", "1")
    assert code == 0 and err == "", err
    fused = onnx.load(out)
    assert [n.op_type for n in fused.graph.node] == ["Conv", "Relu", "Conv", "Relu"]
    feeds = random_feeds(model)
    np.testing.assert_allclose(run(fused, feeds)[0], run(model, feeds)[0], rtol=1e-5, atol=1e-5)
    assert "fused     " in text and "nodes into" in text and "checker OK, onnxruntime OK" in text
    data = json.loads(report.read_text())["fusion"]
    block = {n.name for n in model.graph.node if n.op_type in ("Conv", "BatchNormalization", "Add")} - {"Conv_0"}
    assert any(set(olds) == block for olds in data["merged"].values()), data["merged"]
    assert data["fused"] == sum(data["by_rewrite"].values()) and data["refused"] == []


def test_fuse_lists_refusals_with_reasons(tmp_path, capfd):
    source, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(ARCHITECTURES["mobilenetv2"](), source)
    code, text, _ = call(capfd, "fuse", source, out, "-q", "--no-validate")
    assert code == 0 and out.exists()
    assert "refused" in text and "would cost more multiply-adds" in text


def test_fuse_failures_are_one_line_and_write_nothing(tmp_path, capfd):
    source, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(repvgg_block(), source)
    before = source.read_bytes()
    code, _, err = call(capfd, "fuse", source, source)
    one_line_error(code, err, "is the input file")
    assert source.read_bytes() == before
    code, _, err = call(capfd, "fuse", source, out, "--kinds", "affine,magic")
    one_line_error(code, err, "magic", "passthrough, affine, parallel, linear")
    code, _, err = call(capfd, "fuse", tmp_path / "missing.onnx", out)
    one_line_error(code, err, "missing.onnx")
    assert not out.exists()


def test_a_fused_model_that_computes_something_else_is_never_written(tmp_path, capfd, monkeypatch):
    source, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(repvgg_block(), source)
    fuse = api.Pruner.fuse

    def broken(self, options=None):  # a fusion bug: one weight off by 10%
        result = fuse(self, options)
        name = next(n.inputs[1] for n in self.graph.nodes if n.op_type == "Conv")
        self.graph.params[name] = self.graph.params[name] * 1.1
        return result

    monkeypatch.setattr(api.Pruner, "fuse", broken)
    code, _, err = call(capfd, "fuse", source, out, "-q")
    one_line_error(code, err, "fused model's outputs differ")
    assert not out.exists()


def test_prune_then_fuse(tmp_path, capfd):
    model = ARCHITECTURES["resnet_basic"]()
    source, out, report = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(model, source)
    plan = tmp_path / "plan.json"
    code, text, err = call(capfd, source, out, "--ratio", "0.5", "--fuse", "--report", report, "-q", "--runs", "1",
                           "--save-plan", plan)
    assert code == 0 and err == "", err
    fused = onnx.load(out)
    assert "BatchNormalization" not in {n.op_type for n in fused.graph.node}
    assert "fused     20 nodes into 10" in text
    data = json.loads(report.read_text())
    assert len(data["fusion"]["merged"]) == 10 and data["channels_removed"] > 0
    steps = json.loads(plan.read_text())["steps"]
    assert [s["kind"] for s in steps] == ["channels", "fuse"] and steps[1]["payload"]["kinds"][0] == "passthrough"
    feeds = random_feeds(model)
    assert [o.shape for o in run(fused, feeds)] == [o.shape for o in run(model, feeds)]


def test_recover_then_fuse_reestimates_batchnorm_first(tmp_path, capfd):
    digits = Path(__file__).resolve().parents[2] / "models" / "digits"
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    code, text, err = call(capfd, digits / "digits_cnn.onnx", out, "--ratio", "0.3", "--round-to", "1", "--steps", "2",
                           "--calib", digits / "calib.npz", "--recover", "--recover-methods", "bn", "--fuse",
                           "--report", report, "-q", "--runs", "1")
    assert code == 0 and err == "", err
    data = json.loads(report.read_text())
    passes = [p for r in data["recovery"]["rounds"] for p in r["passes"]]
    assert [p["name"] for p in passes] == ["BN re-estimation"] * 2 and all(p["changed"] > 0 for p in passes)
    assert data["fusion"]["fused"] >= 8 and data["fusion"]["by_rewrite"]["fold affine after"] == 8
    assert not {"BatchNormalization", "Identity"} & {n.op_type for n in onnx.load(out).graph.node}
