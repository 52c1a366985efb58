"""The built wheel works on its own: installed (not editable) into a fresh venv, run from anywhere.

Defects: the wheel lacked onnxprune.passes (every command ended in ModuleNotFoundError), and the rules
installed as a generic top-level ``opspecs`` that tests/opspecs shadowed when run from inside tests/.
The venv borrows this interpreter's dependencies through a .pth file (after its own site-packages,
so the fresh onnxprune wins): no download, a few seconds.
"""
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import onnx
import pytest

import onnxprune
from support import PACKAGE_PARENT

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "onnxprune", "opspecs")  # as .ci/run


CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing may shadow the install


def _run(cmd, cwd):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _can_build_here() -> bool:
    """Offline: this interpreter's setuptools builds the wheel (>= 70.1 has bdist_wheel; older needs wheel)."""
    try:
        import setuptools
    except ImportError:
        return False
    major_minor = tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())
    if major_minor >= (70, 1):
        return True
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return major_minor >= (64, 0)


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the inputs, so no build/ folder of the checkout (stale or shared) is used."""
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"symlinks": True} if copy is shutil.copytree else {}))
    isolation = ["--no-build-isolation"] if _can_build_here() else []  # else pip downloads setuptools
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", tmp_path / "dist", src], tmp_path)
    (wheel,) = (tmp_path / "dist").glob("onnxprune-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"
    # installed first: once the dependencies are borrowed, an onnxprune among them (CI's install) would
    # look "already satisfied" to pip
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel], tmp_path)
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
                   .stdout.strip())
    deps = [p for p in sys.path if Path(p).is_dir() and Path(p).name in ("site-packages", "dist-packages")]
    (purelib / "_onnxprune_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    return python


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_from_anywhere(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"onnxprune", f"onnxprune-{onnxprune.__version__}.dist-info"}
    assert "onnxprune/passes/__init__.py" in names and "onnxprune/opspecs/__init__.py" in names
    assert any(n.endswith("dist-info/licenses/LICENSE") for n in names)

    python = _fresh_venv(tmp_path, wheel)
    script = python.parent / "onnxprune"
    proc = _run([script, "--version"], tmp_path)
    assert proc.stdout == f"onnxprune {onnxprune.__version__}\n"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    model = ROOT / "models" / "resnet_small.onnx"
    outputs = {elsewhere: elsewhere / "out.onnx", ROOT / "tests": tmp_path / "from_tests.onnx"}
    for cwd, out in outputs.items():  # inside tests/, tests/opspecs must not shadow the rules
        where = _run([python, "-c", "import onnxprune.opspecs as o; print(o.__file__)"], cwd).stdout
        assert Path(where.strip()).is_relative_to(python.parents[1]), where
        _run([python, "-m", "onnxprune", model, out, "--ratio", "0.5", "-q", "--runs", "0"], cwd)
        onnx.checker.check_model(onnx.load(out), full_check=True)
    assert outputs[elsewhere].read_bytes() == outputs[ROOT / "tests"].read_bytes()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["out.onnx"]


@pytest.mark.skipif(not os.environ.get("ONNXPRUNE_EXPECT_INSTALLED"), reason="set by .ci/run, which installs the wheel")
def test_the_suite_runs_against_the_installed_package():
    """.ci/run installs the wheel and runs the README's test command: it must not test the checkout."""
    assert PACKAGE_PARENT != ROOT, f"the tests imported onnxprune from the checkout {ROOT}"
    import onnxprune.opspecs
    assert Path(onnxprune.opspecs.__file__).resolve().is_relative_to(PACKAGE_PARENT)
