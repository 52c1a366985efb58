"""Depth pruning benchmark: ResNet-50 and MobileNetV2 without 0/4/8 (and 5) residual blocks.

    python scripts/bench_depth.py [--size 112] [--samples 40] [--runs 30] [--models-dir DIR]

For each model and block count: the MACs ratio, the CPU latency ratio (onnxruntime, one
thread, original and pruned timed interleaved in blocks of ~40 ms of runs, median and
interquartile range of the per-round ratios), and output fidelity against the original on held-out samples
(cosine of the worst output, relative L2), without and with recovery (bias, least
squares, BatchNorm; `Pruner.recover`). Blocks are chosen by the default score with
calibration data (the output change with each block alone removed).

The models are torchvision's with seeded random weights (`scripts/export_models.py`'s
`randomize_`, fan-in Kaiming convolutions, random BatchNorm statistics; no pretrained weights
are available offline), exported at --size px into
--models-dir (kept, so a second run skips the export), and the calibration samples are
standard normal images: the figures say what removal and recovery do to a model's outputs
on that data, not what they do to accuracy. Needs torch and torchvision (--no-deps).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from onnxprune import Pruner  # noqa: E402
from onnxprune.calibration import CalibrationSet  # noqa: E402

PLAN = {"resnet50": (0, 4, 8), "mobilenet_v2": (0, 4, 5, 8)}


def export(name: str, size: int, folder: str) -> str:
    path = os.path.join(folder, f"{name}_{size}_fanin.onnx")
    if os.path.exists(path):
        return path
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import torch
    import export_models as em
    tvm = em.import_torchvision_models()
    if tvm is None:
        raise SystemExit("torchvision is not usable (pip install --no-deps torchvision==0.28.0)")
    torch.manual_seed(em.SEED)
    # fan-in Kaiming weights: with torchvision's own init MobileNetV2's output does not depend on its input
    model = em.randomize_(getattr(tvm, name)(weights=None), em.SEED, reinit_weights=True).eval()
    os.makedirs(folder, exist_ok=True)
    x = torch.randn(1, 3, size, size)
    torch.onnx.export(model, (x,), path, dynamo=False, input_names=["input"], output_names=["output"],
                      opset_version=17, do_constant_folding=True)
    return path


def session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def latency_ratio(original: ort.InferenceSession, pruned: ort.InferenceSession, feeds, runs: int,
                  block_ms: float = 40.0):
    """Per-round ratios pruned/original: each round times a block of back-to-back runs of each
    model (order alternating by round; blocks of about ``block_ms`` so that a loaded machine's
    hiccups average out on small models). Returns median, quartiles and the original's ms."""
    for _ in range(3):
        original.run(None, feeds)
        pruned.run(None, feeds)
    start = time.perf_counter()
    original.run(None, feeds)
    inner = max(1, int(round(block_ms / max((time.perf_counter() - start) * 1000, 1e-3))))
    ratios, base = [], []
    for k in range(runs):
        pair = (original, pruned) if k % 2 == 0 else (pruned, original)
        times = {}
        for s in pair:
            start = time.perf_counter()
            for _ in range(inner):
                s.run(None, feeds)
            times[id(s)] = (time.perf_counter() - start) / inner
        ratios.append(times[id(pruned)] / times[id(original)])
        base.append(times[id(original)] * 1000)
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return float(median), float(q1), float(q3), statistics.median(base)


def bench(name: str, path: str, size: int, n_samples: int, runs: int) -> list[dict]:
    rng = np.random.default_rng(0)
    probe = Pruner.load(path)
    data = CalibrationSet.from_arrays({"input": rng.standard_normal((n_samples, 3, size, size)).astype(np.float32)},
                                      probe.original_graph.inputs)
    fit = data.split(0.2, 0)[0]  # scoring sees what recovery fits on; fidelity is held out
    feeds = {"input": rng.standard_normal((1, 3, size, size)).astype(np.float32)}
    reference = session(path)
    found = len(probe.blocks().blocks)
    print(f"{name} @{size}px: {found} removable residual blocks, MACs {probe.macs() / 1e9:.3f} G", flush=True)
    rows = []
    for depth in PLAN[name]:
        if depth > found:
            continue
        pruner = Pruner.load(path)
        start = time.perf_counter()
        removed = pruner.remove_blocks(depth, data=fit) if depth else []
        seconds = time.perf_counter() - start
        macs = pruner.macs() / probe.macs()
        pruned = session(pruner.to_model())
        median, q1, q3, base_ms = latency_ratio(reference, pruned, feeds, runs)
        row = dict(model=name, depth=depth, macs=macs, latency=median, q1=q1, q3=q3, base_ms=base_ms,
                   blocks=[b["join"] for b in removed], score_s=seconds)
        if depth:
            result = pruner.recover(data)
            row.update(cos=result.fidelity_before.cosine, rel=max(o.rel_l2 for o in result.fidelity_before.outputs),
                       cos_rec=result.fidelity_after.cosine,
                       rel_rec=max(o.rel_l2 for o in result.fidelity_after.outputs), kept=result.kept,
                       recover_s=result.seconds)
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def format_row(r: dict) -> str:
    text = (f"  depth {r['depth']:>2}: MACs x{r['macs']:.3f}  latency x{r['latency']:.3f} "
            f"[IQR {r['q1']:.3f}-{r['q3']:.3f}] (original {r['base_ms']:.1f} ms, 1 thread)")
    if r["depth"]:
        text += (f"  fidelity cos {r['cos']:.4f} rel-L2 {r['rel']:.3f} -> recovered cos {r['cos_rec']:.4f} "
                 f"rel-L2 {r['rel_rec']:.3f}{'' if r['kept'] else ' (recovery not kept: worse)'}"
                 f"  [scoring {r['score_s']:.0f}s, recovery {r['recover_s']:.0f}s]")
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=112, help="input resolution (px)")
    ap.add_argument("--samples", type=int, default=40, help="calibration samples (20%% held out)")
    ap.add_argument("--runs", type=int, default=30, help="timed rounds per pair")
    ap.add_argument("--models-dir", default=os.path.join(ROOT, "models", "extra", "depth"))
    ap.add_argument("--only", choices=sorted(PLAN), help="one model")
    args = ap.parse_args(argv)
    for name in [args.only] if args.only else sorted(PLAN, reverse=True):
        bench(name, export(name, args.size, args.models_dir), args.size, args.samples, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
