"""Benchmark: latency of fused models (``onnxprune fuse``) against the unfused ones.

    python scripts/bench_fuse.py                    # models/*.onnx and the test architectures (BatchNorm unfolded)
    python scripts/bench_fuse.py --export DIR       # also torchvision ResNet-18, MobileNetV2 and a RepVGG-A0-style
                                                    # net exported with BatchNorm unfolded (needs torch)
    python scripts/bench_fuse.py a.onnx --opt-level disable   # onnxruntime's own fusions off

onnxruntime CPU, one thread (intra- and inter-op), sequential execution. Per model
both sessions warm up, then run in rounds, each round both models once, the order
alternating; the ratio of the median latencies (fused / unfused) is reported with a
95% bootstrap interval over the rounds (an interval that contains 1.0 is no
measurable change).
onnxruntime folds Conv+BatchNorm itself at its default optimization level, so the
``all`` level shows what fusion adds beyond that, ``disable`` what it saves a runtime
that does not fuse.
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune import Pruner  # noqa: E402
from onnxprune.validate import make_inputs  # noqa: E402

LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def session(model: onnx.ModelProto, level: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = LEVELS[level]
    options.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def interleaved(a: ort.InferenceSession, b: ort.InferenceSession, feeds, rounds: int, seconds: float,
                warmup: int = 5, seed: int = 0) -> dict:
    """Median ms of each, their ratio b/a, and its 95% bootstrap interval over the rounds."""
    for _ in range(warmup):
        a.run(None, feeds)
        b.run(None, feeds)
    times_a, times_b, start = [], [], time.perf_counter()
    for k in range(rounds):
        pair = []
        for s in ((a, b) if k % 2 == 0 else (b, a)):
            t0 = time.perf_counter()
            s.run(None, feeds)
            pair.append(time.perf_counter() - t0)
        ta, tb = pair if k % 2 == 0 else pair[::-1]
        times_a.append(ta)
        times_b.append(tb)
        if time.perf_counter() - start > seconds and k >= 20:
            break
    times_a, times_b = np.asarray(times_a), np.asarray(times_b)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(times_a), (1000, len(times_a)))  # resampled rounds (pairs stay pairs)
    boot = np.median(times_b[picks], axis=1) / np.median(times_a[picks], axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"ms_before": 1000 * float(np.median(times_a)), "ms_after": 1000 * float(np.median(times_b)),
            "ratio": float(np.median(times_b) / np.median(times_a)), "low": float(low), "high": float(high),
            "rounds": len(times_a)}


def bench(name: str, model: onnx.ModelProto, levels, rounds: int, seconds: float) -> list[dict]:
    pruner = Pruner.from_model(model)
    nodes = len(pruner.graph.nodes)
    result = pruner.fuse()
    fused = pruner.to_model()
    feeds = make_inputs(pruner.original_graph, seed=0)
    rows = []
    for level in levels:
        row = interleaved(session(model, level), session(fused, level), feeds, rounds, seconds)
        row.update(model=name, level=level, nodes=nodes, nodes_after=len(pruner.graph.nodes), fused=result.changed)
        rows.append(row)
    return rows


def test_architectures() -> dict[str, onnx.ModelProto]:
    """The builder-made architectures of the tests (Conv -> BatchNorm everywhere), no torch needed."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.architectures import ARCHITECTURES
    return {f"arch:{name}": make() for name, make in ARCHITECTURES.items()}


def export_unfolded(folder: Path) -> list[Path]:
    """torchvision ResNet-18 and MobileNetV2 (224 px) and a RepVGG-A0-style net in its training form
    (112 px), random weights and statistics, exported in eval mode with BatchNorm kept
    (TrainingMode.PRESERVE: the exporter's own Conv+BN folding does not run)."""
    import warnings

    import torch
    import torch.nn as nn
    sys.path.insert(0, str(ROOT / "scripts"))
    from export_models import import_torchvision_models, randomize_

    class RepBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.dense = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
            self.point = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))
            self.skip = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None

        def forward(self, x):
            y = self.dense(x) + self.point(x)
            return torch.relu(y + self.skip(x) if self.skip is not None else y)

    def repvgg():
        layers, cin = [], 3
        for cout, n in ((48, 1), (48, 2), (96, 4), (192, 14), (1280, 1)):  # RepVGG-A0 depths
            for k in range(n):
                layers.append(RepBlock(cin, cout, 2 if k == 0 else 1))
                cin = cout
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 100))

    tvm = import_torchvision_models()
    models = {"repvgg_a0_unfolded": (repvgg(), 112)}
    if tvm is not None:
        models["resnet18_unfolded"] = (tvm.resnet18(num_classes=100), 224)
        models["mobilenetv2_unfolded"] = (tvm.mobilenet_v2(num_classes=100), 224)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (model, size) in models.items():
        path = folder / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(randomize_(model).eval(), (torch.randn(1, 3, size, size),), str(path), dynamo=False,
                              opset_version=17, training=torch.onnx.TrainingMode.PRESERVE,
                              input_names=["input"], output_names=["output"])
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="ONNX files (default: models/*.onnx and the test architectures)")
    parser.add_argument("--export", metavar="DIR", help="also export and bench models with BatchNorm unfolded (torch)")
    parser.add_argument("--opt-level", default="all,disable", help="onnxruntime optimization levels (all,basic,disable)")
    parser.add_argument("--rounds", type=int, default=300, help="at most this many rounds per model and level")
    parser.add_argument("--seconds", type=float, default=8.0, help="stop a model's rounds after this long")
    args = parser.parse_args()
    levels = [level for level in args.opt_level.split(",") if level]
    models: dict[str, onnx.ModelProto] = {}
    paths = [Path(p) for p in args.models] or [Path(p) for p in sorted(glob.glob(str(ROOT / "models" / "*.onnx")))]
    if args.export:
        paths += export_unfolded(Path(args.export))
    for path in paths:
        models[path.stem] = onnx.load(str(path))
    if not args.models:
        models.update(test_architectures())
    print(f"onnxruntime {ort.__version__} CPU, 1 thread, interleaved; ratio = fused / unfused median, 95% interval")
    print(f"{'model':<24}{'level':>8}{'nodes':>12}{'fused':>7}{'ms before':>11}{'ms after':>10}{'ratio':>8}"
          f"{'95% interval':>16}{'rounds':>8}")
    for name, model in models.items():
        for r in bench(name, model, levels, args.rounds, args.seconds):
            verdict = "" if r["low"] > 1.0 or r["high"] < 1.0 else "  (no measurable change)"
            print(f"{name:<24}{r['level']:>8}{r['nodes']:>6}->{r['nodes_after']:<5}{r['fused']:>7}"
                  f"{r['ms_before']:>11.3f}{r['ms_after']:>10.3f}{r['ratio']:>8.3f}"
                  f"{'[%.3f, %.3f]' % (r['low'], r['high']):>16}{r['rounds']:>8}{verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
