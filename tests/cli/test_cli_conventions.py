"""Everyday conventions through the CLI: --version, optional extras, --shapes, help, exit codes."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import onnxprune
from onnxprune.errors import EXIT_USAGE
from support import PACKAGE_PARENT
from support.builder import GraphBuilder
from support.small_models import conv_chain, save
from support.cli import call

def run_cli(args, cwd, pythonpath=()):
    """``python -m onnxprune ARGS`` with the onnxprune these tests import."""
    path = [*map(str, pythonpath), str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]
    return subprocess.run([sys.executable, "-m", "onnxprune", *map(str, args)], cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(path)),
                          capture_output=True, text=True, timeout=120)


def assert_one_line(err, *fragments):
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def assert_one_line_error(proc, code, *fragments):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert_one_line(proc.stderr, "onnxprune: error: ", *fragments)


@pytest.fixture
def small(tmp_path):
    return Path(save(conv_chain(), tmp_path / "small.onnx"))


@pytest.mark.parametrize("args", [["--version"], ["analyze", "--version"], ["IN.onnx", "OUT.onnx", "--version"]])
def test_version(tmp_path, args):
    proc = run_cli(args, tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"onnxprune {onnxprune.__version__}\n", "")
    assert not list(tmp_path.iterdir())


def test_plot_without_matplotlib_is_one_line_naming_the_extra(small, tmp_path):
    """matplotlib is the optional [plot] extra: without it --plot fails before any work, nothing written."""
    fake = tmp_path / "no_matplotlib"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    proc = run_cli(["sensitivity", small, "--plot", "sens.png", "--report", "sens.json", "-q"], tmp_path,
                   pythonpath=[fake])
    assert_one_line_error(proc, 2, "--plot needs matplotlib", "pip install 'onnxprune[plot]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_matplotlib", "small.onnx"]
    # the same install prunes without matplotlib
    proc = run_cli([small, "out.onnx", "-q", "--runs", "0"], tmp_path, pythonpath=[fake])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.onnx").is_file()


# ----------------------------------------------------------------------------- --shapes
def two_inputs_and_a_scalar(path):
    """a, b: [N, 3, H, W] (symbolic), scale: a scalar; two convs each, added, times scale."""
    b = GraphBuilder(seed=5)
    x, y, scale = b.input("a", ["N", 3, "H", "W"]), b.input("b", ["N", 3, "H", "W"]), b.input("scale", [])
    total = b.op("Add", [b.conv(b.relu(b.conv(x, 4)), 2), b.conv(b.relu(b.conv(y, 4)), 2)])
    b.output(b.rename(b.op("Mul", [total, scale]), "output"))
    return save(b.build(), path)


def analyze_macs(capfd, *options):
    code, out, err = call(capfd, ["analyze", "m.onnx", "--json", "-q", *options])
    assert code == 0, err
    return json.loads(out)["macs_before"]


def test_shapes_in_trtexec_form_equal_repeated_input_shapes(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    two_inputs_and_a_scalar("m.onnx")
    trtexec = analyze_macs(capfd, "--shapes=a:1x3x8x8,b:1x3x8x8,scale:")
    assert trtexec == analyze_macs(capfd, "--input-shape", "a:1x3x8x8", "--input-shape", "b:1x3x8x8,scale:")
    assert trtexec == analyze_macs(capfd, "--input-shape", "a:1x3x8x8,b:1x3x8x8")
    # the shapes are the ones used: 4x the pixels, 4x the MACs of the convs
    assert analyze_macs(capfd, "--shapes", "a:1x3x16x16,b:1x3x16x16") == 4 * trtexec > 0
    code, _, err = call(capfd, ["-q", "m.onnx", "out.onnx", "--shapes", "a:1x3x8x8,b:1x3x8x8,scale:", "--runs", "0"])
    assert code == 0, err
    dims = onnx.load("out.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "H", "W"]  # the file keeps its dynamic dims


@pytest.mark.parametrize("args,fragment", [
    (["m.onnx", "out.onnx", "--input-shape", "a:1x3xeightx8"], "--input-shape 'a:1x3xeightx8': expected NAME:D1xD2"),
    (["m.onnx", "out.onnx", "--shapes", "a:1x3x8x8,b:1x3x8"], "--input-shape b: rank 3 given, model says 4"),
    (["m.onnx", "out.onnx", "--shapes", "a:1x3x8x8,image:1x3x8x8"], "the model has no input 'image'"),
    (["m.onnx", "out.onnx", "--shapes", "scale:1x3"], "--input-shape scale: rank 2 given, model says 0"),
    (["m.onnx", "out.onnx", "--shapes", "a:1x3x8x8,a:1x3x9x9"], "'a' is given two shapes"),
    (["analyze", "m.onnx", "--shapes", "a:1x3x8x8,"], "expected NAME:D1xD2"),
    (["sensitivity", "m.onnx", "--ratios", "abc"], "--ratios 'abc'"),
    (["sensitivity", "m.onnx", "--ratios", "0.5,1.5"], "--ratios '0.5,1.5'"),
])
def test_bad_shape_and_ratio_values_are_option_errors(tmp_path, capfd, monkeypatch, args, fragment):
    """Defect: a bad --input-shape value exited 1 (bad input); the README says option errors exit 2."""
    monkeypatch.chdir(tmp_path)
    two_inputs_and_a_scalar("m.onnx")
    code, out, err = call(capfd, [*args, "--report", "r.json"])
    assert code == EXIT_USAGE
    assert_one_line(err, fragment)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


# ----------------------------------------------------------------------------- help
@pytest.mark.parametrize("args,usage", [
    (["--help"], "usage: onnxprune [-h] [--version] {prune,analyze,sensitivity,fuse,apply}"),
    (["apply", "p.json", "in.onnx", "out.onnx", "--help"], "usage: onnxprune apply "),
    (["in.onnx", "out.onnx", "--help"], "usage: onnxprune prune "),
    (["in.onnx", "out.onnx", "--ratio", "0.3", "-h"], "usage: onnxprune prune "),
    (["prune", "--help"], "usage: onnxprune prune "),
    (["analyze", "in.onnx", "--help"], "usage: onnxprune analyze "),
    (["sensitivity", "--help"], "usage: onnxprune sensitivity "),
])
def test_help_is_plain_text_with_defaults(tmp_path, args, usage):
    """Defects: 'IN OUT --help' failed with "invalid choice"; the top-level help showed
    reStructuredText markup (``...``) and no option showed its default."""
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    text = " ".join(proc.stdout.split())  # whatever the terminal width
    assert text.startswith(usage), text[:200]
    assert "``" not in text and ":func:" not in text and "**" not in text
    if usage.startswith("usage: onnxprune prune"):
        assert "--ratio RATIO fraction of each group's channels to remove (default 0.5; 0 with --depth)" in text
        assert "--runs N latency: at least N interleaved runs of each model (0: no latency; default 20)" in text
        assert not re.search(r"\(default: (None|False|True|\[\])\)", text)
    if usage.startswith("usage: onnxprune sensitivity"):
        assert "(default: 0.25,0.5,0.75)" in text
    assert not list(tmp_path.iterdir())
