"""Everyday conventions through the real entry point: --version, optional extras."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import onnxprune
from support.small_models import conv_chain, save

PACKAGE_PARENT = Path(onnxprune.__file__).resolve().parents[1]  # this checkout, or site-packages when installed


def run_cli(args, cwd, pythonpath=()):
    """``python -m onnxprune ARGS`` with the onnxprune these tests import."""
    path = [*map(str, pythonpath), str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]
    return subprocess.run([sys.executable, "-m", "onnxprune", *map(str, args)], cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(path)),
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc, code, *fragments):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


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
