"""The command line: one-line errors that write nothing, summaries, reports, analyze."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune import api, validate as validate_module
from onnxprune.errors import ValidationError
from onnxprune.plan import Plan
from support import PACKAGE_PARENT
from support.builder import GraphBuilder
from support.oracle import random_feeds, run
from support.small_models import conv_chain, custom_domain, save, with_opset
from support.cli import call

ROOT = Path(__file__).resolve().parents[2]
RESNET = ROOT / "models" / "resnet_small.onnx"
NEWEST = onnx.defs.onnx_opset_version()


def run_cli(args, cwd):
    """``python -m onnxprune ARGS`` as a user runs it (the package these tests import)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "onnxprune", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("onnxprune: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def small(tmp_path):
    """A small valid model in an otherwise empty folder; the test runs in that folder."""
    return Path(save(conv_chain(), tmp_path / "small.onnx"))


# ----------------------------------------------------------------- bad inputs
def bad_input(tmp_path, kind):
    """Create the bad input ``kind`` in tmp_path; return the input path to pass."""
    path = tmp_path / "in.onnx"
    if kind == "missing":
        return tmp_path / "missing.onnx"
    if kind == "directory":
        (tmp_path / "folder.onnx").mkdir()
        return tmp_path / "folder.onnx"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("name,value\nratio,0.5\nthis is a CSV file, not a model\n")
    elif kind == "truncated":
        data = RESNET.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "custom-domain":
        save(custom_domain(), path)
    elif kind == "opset-6":
        save(with_opset(conv_chain(), 6), path)
    elif kind == "opset-too-new":
        save(with_opset(conv_chain(), NEWEST + 1), path)
    elif kind == "invalid-graph":
        model = conv_chain()
        model.graph.node[1].input[0] = "undefined_tensor"
        save(model, path)
    elif kind == "missing-external-data":
        onnx.save(conv_chain(), str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
        (tmp_path / "w.bin").unlink()
    return path


BAD_INPUTS = {
    "missing": "no such file", "directory": "not a file", "empty": "empty file", "text": "not an ONNX model",
    "truncated": "truncated", "custom-domain": "custom domain 'com.example.custom'",
    "opset-6": "opset 6 is not supported", "opset-too-new": f"opset {NEWEST + 1} is not supported",
    "invalid-graph": "invalid ONNX model", "missing-external-data": "external data could not be read",
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
@pytest.mark.parametrize("command", ["prune", "analyze"])
def test_bad_input_files(tmp_path, capfd, monkeypatch, kind, command):
    monkeypatch.chdir(tmp_path)
    src = bad_input(tmp_path, kind)
    before = sorted(os.listdir(tmp_path))
    args = [src, "out.onnx"] if command == "prune" else ["analyze", src]
    code, out, err = call(capfd, args)
    assert_one_line_error(code, err, BAD_INPUTS[kind])
    assert out == ""
    assert sorted(os.listdir(tmp_path)) == before  # no output, no temp file


@pytest.mark.parametrize("spelling", ["small.onnx", "./small.onnx", "{tmp}/small.onnx", "{tmp}/../{name}/small.onnx",
                                      "link.onnx"])
def test_output_equal_to_input_is_refused(small, capfd, monkeypatch, spelling):
    tmp = small.parent
    monkeypatch.chdir(tmp)
    os.symlink(small, tmp / "link.onnx")
    original = small.read_bytes()
    dst = spelling.format(tmp=tmp, name=tmp.name)
    code, _, err = call(capfd, ["small.onnx", dst])
    assert_one_line_error(code, err, "is the input file")
    assert small.read_bytes() == original


@pytest.mark.parametrize("options,fragment", [
    (["--ratio", "1.5"], "--ratio must be in [0, 1), got 1.5"),
    (["--ratio", "1"], "--ratio"),
    (["--ratio", "-0.2"], "--ratio"),
    (["--ratio", "nan"], "--ratio"),
    (["--round-to", "0"], "--round-to"),
    (["--ignore", "Conv_(["], "--ignore 'Conv_(['"),
    (["--input-shape", "input"], "--input-shape 'input'"),
    (["--input-shape", "input:1x3xeightx8"], "expected NAME:D1xD2"),
    (["--input-shape", "input:1x3x-8x8"], "expected NAME:D1xD2"),
    (["--input-shape", "1x3x8x8"], "expected NAME:D1xD2"),
    (["--input-shape", "image:1x3x8x8"], "the model has no input 'image' (inputs: input)"),
    (["--input-shape", "input:1x3x8"], "rank 3 given, model says 4"),
])
def test_bad_options(small, capfd, monkeypatch, options, fragment):
    monkeypatch.chdir(small.parent)
    code, out, err = call(capfd, ["small.onnx", "out.onnx", *options, "--report", "r.json"])
    assert_one_line_error(code, err, fragment)
    assert sorted(os.listdir(small.parent)) == ["small.onnx"]  # no model, no report


@pytest.mark.parametrize("options,fragment", [
    (["plain_file/out.onnx"], "output plain_file/out.onnx: "),
    (["plain_file/deeper/out.onnx"], "is not a writable folder"),
    (["out.onnx", "--report", "plain_file/r.json"], "--report plain_file/r.json: "),
    (["out.onnx", "--save-plan", "plain_file/p.json"], "--save-plan plain_file/p.json"),
    (["out.onnx", "--report", "small.onnx"], "--report small.onnx is the input file"),
    (["out.onnx", "--save-plan", "./small.onnx"], "--save-plan ./small.onnx is the input file"),
    (["out.onnx", "--report", "."], "--report . is a directory"),
    (["."], "output . is a directory"),
])
def test_unwritable_destinations_fail_before_any_work(small, capfd, monkeypatch, options, fragment):
    """A destination that cannot be written fails first: no half-written results (model without report)."""
    monkeypatch.chdir(small.parent)
    Path("plain_file").write_text("x")
    original = small.read_bytes()
    code, out, err = call(capfd, ["small.onnx", *options, "--runs", "0"])
    assert_one_line_error(code, err, fragment)
    assert out == "" and sorted(os.listdir(".")) == ["plain_file", "small.onnx"]
    assert small.read_bytes() == original


def test_analyze_report_destination_is_checked_too(small, capfd, monkeypatch):
    monkeypatch.chdir(small.parent)
    code, _, err = call(capfd, ["analyze", "small.onnx", "--report", "small.onnx"])
    assert_one_line_error(code, err, "--report small.onnx is the input file")


def test_missing_destination_folders_are_created_with_mkdir(small, capfd, monkeypatch):
    monkeypatch.chdir(small.parent)
    code, _, _ = call(capfd, ["-q", "small.onnx", "a/out.onnx", "--runs", "0", "--report", "b/r.json",
                              "--save-plan", "c/d/p.json", "--mkdir"])
    assert code == 0
    assert all(Path(p).is_file() for p in ("a/out.onnx", "b/r.json", "c/d/p.json"))


def test_validation_failure_writes_nothing_and_is_an_internal_error(small, capfd, monkeypatch):
    monkeypatch.chdir(small.parent)

    def failing(*args, **kwargs):
        raise ValidationError("onnxruntime cannot run the pruned model: simulated")

    monkeypatch.setattr(api, "validate", failing)
    code, out, err = call(capfd, ["-q", "small.onnx", "out.onnx", "--report", "r.json", "--save-plan", "p.json"])
    assert code == 4  # the original ran: a pruned model that does not is onnxprune's fault
    assert_one_line_error(code, err, "simulated")
    assert sorted(os.listdir(small.parent)) == ["small.onnx"]
    # without -q too, the error is the only line: progress is printed only when a run succeeds
    code, out, err = call(capfd, ["small.onnx", "out.onnx"])
    assert code == 4 and out == ""
    assert_one_line_error(code, err, "simulated")
    assert not Path("out.onnx").exists()


def test_cuda_without_cuda_and_bad_npz_are_one_line_errors(small, capfd, monkeypatch):
    monkeypatch.chdir(small.parent)
    monkeypatch.setattr(validate_module.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    code, _, err = call(capfd, ["-q", "small.onnx", "out.onnx", "--provider", "cuda"])
    assert_one_line_error(code, err, "--provider cuda", "onnxruntime-gpu")
    np.savez("feeds.npz", image=np.zeros((1, 3, 8, 8), np.float32))
    code, _, err = call(capfd, ["-q", "small.onnx", "out.onnx", "--inputs", "feeds.npz"])
    assert_one_line_error(code, err, "missing arrays for inputs input")
    assert sorted(os.listdir(".")) == ["feeds.npz", "small.onnx"]


def test_errors_through_the_real_entry_point(tmp_path):
    """The installed way of running it: exit status, one stderr line, no traceback, nothing written."""
    bad = bad_input(tmp_path, "truncated")
    for args, fragment in (([bad, "out.onnx"], "truncated"),
                           ([RESNET, "out.onnx", "--ratio", "1.5"], "--ratio"),
                           ([RESNET, "./out.onnx", "--input-shape", "input:1x3"], "rank 2 given")):
        result = run_cli(args, tmp_path)
        assert_one_line_error(result.returncode, result.stderr, fragment)
        assert result.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["in.onnx"]


# ----------------------------------------------------------------- success
def test_prune_resnet_small_end_to_end(tmp_path):
    result = run_cli([RESNET, "pruned.onnx", "--ratio", "0.5", "--runs", "4", "--latency-time", "1",
                      "--report", "r.json", "--save-plan", "plan.json"], tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for label in ("groups", "params", "MACs", "latency", "removed", "wrote"):
        assert any(line.startswith(label) for line in out.splitlines()), (label, out)
    assert "valid:    checker OK, onnxruntime OK, output shapes unchanged" in out
    assert "[onnxprune] load:" in result.stderr and "Traceback" not in result.stderr

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    assert 0 < report["params_ratio"] < 1 and 0 < report["macs_ratio"] < 1
    assert report["latency_ms_before"] > 0 and report["latency_ms_after"] > 0
    latency = report["latency"]  # timed for real: its structure, never its figures
    assert latency["threads"] == 1 and latency["runs"] >= 4 and latency["provider"] == "cpu"
    assert latency["ratio_ci95"][0] <= report["latency_ratio"] == latency["ratio"] <= latency["ratio_ci95"][1]
    assert report["latency_not_faster"] is (latency["verdict"] != "faster")
    assert report["valid"] == {"checker": True, "onnxruntime": True, "output_shapes_unchanged": True}
    assert report["groups_prunable"] == len(report["decisions"]) > 0
    assert report["channels_removed"] == sum(len(d["removed"]) for d in report["decisions"])
    assert report["output"] == "pruned.onnx" and report["options"]["ratio"] == 0.5

    plan = Plan.from_json((tmp_path / "plan.json").read_text())
    assert [list(d.removed) for d in plan.decisions] == [d["removed"] for d in report["decisions"]]

    pruned = onnx.load(str(tmp_path / "pruned.onnx"))
    onnx.checker.check_model(pruned, full_check=True)
    assert run(pruned, random_feeds(pruned))[0].shape == (1, 100)
    assert pruned.producer_name == onnx.load(str(RESNET)).producer_name


def test_no_validate_and_quiet(small, capfd, monkeypatch):
    monkeypatch.chdir(small.parent)
    code, out, err = call(capfd, ["-q", "prune", "small.onnx", "out.onnx", "--no-validate", "--ratio", "0.25"])
    assert code == 0 and err == ""
    assert "valid:    checker OK, onnxruntime not run (--no-validate)" in out
    assert "latency" not in out and "wrote     out.onnx" in out
    model = onnx.load("out.onnx")
    assert run(model, random_feeds(model))[0].shape == (1, 10)


def test_implicit_and_explicit_prune_command_agree(small, capfd, monkeypatch):
    monkeypatch.chdir(small.parent)
    assert call(capfd, ["-q", "small.onnx", "a.onnx", "--runs", "0", "--save-plan", "a.json"])[0] == 0
    assert call(capfd, ["-q", "prune", "small.onnx", "b.onnx", "--runs", "0", "--save-plan", "b.json"])[0] == 0
    assert Path("a.json").read_text() == Path("b.json").read_text()
    assert Path("a.onnx").read_bytes() == Path("b.onnx").read_bytes()
    # options may come first, before the files or before the command
    assert call(capfd, ["--runs", "0", "-q", "small.onnx", "c.onnx", "--save-plan", "c.json"])[0] == 0
    assert Path("c.json").read_text() == Path("a.json").read_text()
    code, out, err = call(capfd, ["-q", "analyze", "small.onnx"])
    assert code == 0 and err == "" and out.startswith("small.onnx\ngroups    3 found")


def test_options_reach_the_plan(small, capfd, monkeypatch):
    monkeypatch.chdir(small.parent)
    code, _, _ = call(capfd, ["-q", "small.onnx", "o.onnx", "--no-validate", "--ratio", "0.5", "--criterion",
                              "random", "--seed", "3", "--ignore", "^Conv_1$", "--report", "r.json"])
    report = json.loads(Path("r.json").read_text())
    assert code == 0 and report["options"]["criterion"] == "random" and report["options"]["seed"] == 3
    assert [d["group"] for d in report["decisions"]] == [0]
    assert report["skipped"] and "--ignore" in report["skipped"][0]
    assert report["latency_ms_before"] is None and "onnxruntime" not in report["valid"]


def test_analyze_prints_groups_and_blocked_reasons(small, capfd, monkeypatch):
    monkeypatch.chdir(small.parent)
    code, out, err = call(capfd, ["analyze", "small.onnx", "--report", "a.json"])
    assert code == 0
    assert "groups    3 found, 2 prunable (14 channels), 1 blocked" in out
    assert "blocked group 2 (10 ch, root Gemm_0.out[0][1]): graph output output" in out
    assert out.splitlines()[2].startswith("params") and out.splitlines()[3].startswith("MACs")
    assert "removed" not in out and "[onnxprune] dependency graph:" in err
    report = json.loads(Path("a.json").read_text())
    assert report["groups_blocked"][0]["blocked_by"] == ["graph output output"]
    assert report["params_after"] is None
    assert sorted(os.listdir(".")) == ["a.json", "small.onnx"]


def test_analyze_resnet_small(capfd):
    code, out, _ = call(capfd, ["-q", "analyze", RESNET])
    assert code == 0
    assert "groups    13 found, 12 prunable" in out
    assert "graph output output" in out and "MACs      135.49M" in out


def test_symbolic_dims_need_no_input_shape_and_input_shape_still_fixes_them(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    b = GraphBuilder(seed=4)
    x = b.input("input", ["N", 3, "H", "W"])
    b.output(b.rename(b.conv(b.relu(b.conv(x, 4)), 2), "output"))
    save(b.build(), "dyn.onnx")
    code, out, _ = call(capfd, ["-q", "analyze", "dyn.onnx", "--report", "r.json"])
    assert code == 0 and "groups    2 found, 1 prunable (4 channels), 1 blocked" in out
    assert "not analysed" not in out and not json.loads(Path("r.json").read_text())["unanalysed"]
    code, out, err = call(capfd, ["-q", "dyn.onnx", "dyn_out.onnx", "--runs", "0"])
    assert code == 0, err
    dims = onnx.load("dyn_out.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "H", "W"]
    code, out, _ = call(capfd, ["-q", "analyze", "dyn.onnx", "--input-shape", "input:1x3x8x8"])
    assert code == 0 and "groups    2 found, 1 prunable (4 channels), 1 blocked" in out
    assert "not analysed" not in out
    # pruning it validates with the fixed shape, and the written model keeps its dynamic dims
    code, out, err = call(capfd, ["-q", "dyn.onnx", "out.onnx", "--input-shape", "input:1x3x8x8", "--runs", "0"])
    assert code == 0, err
    dims = onnx.load("out.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "H", "W"]


def test_fidelity_is_measured_on_the_users_inputs_when_given(small, capfd, monkeypatch):
    """--inputs without --calib: the summary's fidelity line is about the user's own data, not random
    samples (random inputs say little of how a model of text or images reads real ones)."""
    monkeypatch.chdir(small.parent)
    rng = np.random.default_rng(0)
    np.savez("feeds.npz", input=rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    code, _, _ = call(capfd, ["-q", "small.onnx", "out.onnx", "--inputs", "feeds.npz", "--report", "r.json"])
    assert code == 0
    fidelity = json.loads(Path("r.json").read_text())["fidelity"]
    assert fidelity["data"] == "inputs from --inputs" and fidelity["samples"] == 1
    code, _, _ = call(capfd, ["-q", "small.onnx", "out2.onnx", "--report", "r2.json"])
    assert code == 0 and "random" in json.loads(Path("r2.json").read_text())["fidelity"]["data"]
