"""Peak memory of a prune, as a multiple of the model's size (the scale goal: bounded memory).

Builds an MLP of ``--mb`` megabytes of float32 weights (a chain of Gemm layers
with ReLU, external data above 2 GB), prunes it with the CLI in a child process
per configuration, and prints the child's peak resident memory next to the
model size, side by side in one run:

    python scripts/bench_memory.py --mb 512

Each row subtracts the resident memory of a child that only imports onnxprune
(Python, numpy, onnx, onnxruntime), so the ratio is what the model costs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, mb: int, width: int) -> int:
    """A Gemm/ReLU chain with about ``mb`` MiB of weights; returns the weight bytes."""
    layer_bytes = width * width * 4
    layers = max(2, round(mb * 2**20 / layer_bytes))
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width), dtype=np.float32) / np.float32(np.sqrt(width))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}"], name=f"fc{i}", transB=1))
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info(f"g{layers - 1}", TensorProto.FLOAT, ["batch", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return layers * (layer_bytes + width * 4)


# The peak of this process image (VmHWM): unlike ru_maxrss it does not inherit the parent's peak.
HWM = ("def hwm():\n"
       "    for line in open('/proc/self/status'):\n"
       "        if line.startswith('VmHWM:'):\n"
       "            return int(line.split()[1]) * 1024\n")


def peak_rss(args: list[str]) -> tuple[int, float, int]:
    """(peak RSS bytes, seconds, exit code) of one child process."""
    code = (HWM + "import runpy, sys\n"
            f"sys.argv = {['onnxprune', *args]!r}\n"
            "try:\n    runpy.run_module('onnxprune', run_name='__main__')\n"
            "except SystemExit as e:\n    rc = e.code or 0\nelse:\n    rc = 0\n"
            "print('PEAK', hwm(), rc, file=sys.stderr)\n")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    seconds = time.perf_counter() - start
    for line in proc.stderr.splitlines():
        if line.startswith("PEAK"):
            _, peak, rc = line.split()
            return int(peak), seconds, int(rc)
    raise RuntimeError(proc.stderr[-2000:])


def baseline() -> int:
    code = HWM + "import onnxprune.cli, onnxruntime, onnx, numpy\nprint(hwm())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return int(out.stdout.strip())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="model size in MiB (default 256)")
    ap.add_argument("--width", type=int, default=2048)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "mlp.onnx"
        size = build(model, args.mb, args.width)
        base = baseline()
        print(f"model: {size / 2**20:.0f} MiB of weights; a bare import of onnxprune: {base / 2**20:.0f} MiB")
        print(f"{'configuration':<34}{'peak RSS':>12}{'over import':>14}{'x model':>9}{'seconds':>9}")
        for name, extra in [("analyze", ["analyze", str(model)]),
                            ("prune --no-validate", [str(model), str(Path(tmp) / "a.onnx"), "--no-validate", "-q"]),
                            ("prune (validate, latency 5 runs)", [str(model), str(Path(tmp) / "b.onnx"), "--runs", "5", "-q"])]:
            peak, seconds, rc = peak_rss(extra)
            note = "" if rc == 0 else f"  (exit {rc})"
            print(f"{name:<34}{peak / 2**20:>10.0f} M{(peak - base) / 2**20:>12.0f} M{(peak - base) / size:>9.2f}"
                  f"{seconds:>9.1f}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
