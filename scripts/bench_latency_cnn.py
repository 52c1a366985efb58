#!/usr/bin/env python
"""Benchmark: is a --target-macs prune of a CNN faster than the original on CPU, and by how much?

    python scripts/export_bench_cnns.py            # torchvision CNNs at 160 px -> models/extra/cnn160/
    python scripts/fetch_models.py orientation ppocr_cls ppocr_rec   # PaddleOCR models (optional)
    python scripts/bench_latency_cnn.py [--runs 60] [--models PATH...] [--modes uniform global]

For every model and budget (``--target-macs 0.5`` uniform and ``--global``), two
prunes: *before* (exact widths, ``--round-to 1``, no speed check: the old
behaviour) and *after* (the defaults: the measured width grid and the speed
check). Each pruned model is timed against its original in this process,
interleaved, onnxruntime CPU with one thread (``onnxprune.speed.compare_latency``:
median of paired rounds and its 95% interval). Printed per row: MACs ratio, latency
ratio [95% CI], and how many pruned groups kept a width off the measured grid.
The goal: every *after* row faster (interval below 1) and the mean latency
ratio at most 1.2x the mean MACs ratio.
"""
from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune import Pruner, PruneOptions  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.latency import Verdict  # noqa: E402
from onnxprune.options import LatencyOptions  # noqa: E402
from onnxprune.speed import compare_latency  # noqa: E402
from onnxprune.validate import make_inputs  # noqa: E402
from onnxprune.widthgrid import group_steps  # noqa: E402

PADDLE = ("orientation", "ppocr_cls", "ppocr_rec")


def default_models() -> list[str]:
    paths = sorted(glob.glob(str(ROOT / "models" / "extra" / "cnn160" / "*.onnx")))
    paths += sorted(glob.glob(str(ROOT / "models" / "extra" / "speed" / "*.onnx")))
    paths += sorted(glob.glob(str(ROOT / "models" / "*.onnx")))
    paths += [str(p) for name in PADDLE if (p := ROOT / "models" / "extra" / name / "model.onnx").exists()]
    return paths


def name_of(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.stem == "model" else p.stem


def off_grid(pruner: Pruner, steps: dict[int, int]) -> int:
    """Pruned groups whose kept width is off their step on the measured grid: neither a multiple of
    it nor (below it) a divisor of it."""
    count = 0
    for d in pruner.plans[0].decisions:
        kept, step = d.size - len(d.removed), steps.get(d.group, 1)
        count += bool(d.removed) and kept % step != 0 and step % kept != 0
    return count


def input_shapes(path: str) -> dict | None:
    """The fixed input shape fetch_models.py recorded next to a fetched model (its inputs are dynamic)."""
    meta = Path(path).with_name(f"{Path(path).parent.name}.json")
    if not meta.exists():
        return None
    data = json.loads(meta.read_text())
    return {data["input"]: data["input_shape"]}


def run_one(path: str, options: PruneOptions, runs: int) -> dict:
    pruner = Pruner.load(path, input_shapes(path))
    macs0 = pruner.macs()
    steps = group_steps(pruner.depgraph, pruner.width_grid("cpu"))
    start = time.perf_counter()
    pruner.prune(options)
    seconds = time.perf_counter() - start
    feeds = make_inputs(pruner.original_graph, seed=0)
    latency = compare_latency(path, pruner.to_model(), feeds, "cpu", LatencyOptions(threads=1, min_runs=runs))
    search = pruner.searches[-1]
    return {"macs": pruner.macs() / macs0, "latency": latency, "off_grid": off_grid(pruner, steps),
            "groups": len(pruner.plans[0].decisions), "seconds": seconds,
            "tried": len(search.speed.tried) if search.speed else 0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=None, help="ONNX files (default: see above)")
    ap.add_argument("--modes", nargs="*", default=["uniform", "global"], choices=["uniform", "global"])
    ap.add_argument("--target", type=float, default=0.5, help="--target-macs (default 0.5)")
    ap.add_argument("--variants", nargs="*", default=["before", "after"], choices=["before", "after"])
    ap.add_argument("--runs", type=int, default=60, help="timed runs per model and comparison (default 60)")
    args = ap.parse_args(argv)
    paths = args.models or default_models()
    grid = Pruner.load(paths[0], input_shapes(paths[0])).width_grid("cpu")  # measured once per machine, then cached
    print(f"width grid: {grid.describe()}")
    print(f"--target-macs {args.target}, onnxruntime CPU, 1 thread, {args.runs} interleaved runs per comparison; "
          "latency: median [95% CI] of the pruned model over the original")
    header = f"{'model':<20}{'budget':<8}{'variant':<8}{'MACs':>7}{'latency':>9}{'ci-lo':>7}{'ci-hi':>7}{'off-grid':>9}" \
             f"{'faster':>7}{'prune s':>8}"
    print(header)
    rows = []
    variants = {"before": dict(round_to=1, never_slower=False), "after": dict()}
    jobs = [(p, m, v) for p in paths for m in args.modes for v in variants if v in args.variants]
    for path, mode, variant in tqdm(jobs, desc="bench", file=sys.stderr, leave=False):
        options = PruneOptions(target_macs=args.target, global_rank=mode == "global", **variants[variant])
        try:
            r = run_one(path, options, args.runs)
        except OnnxPruneError as exc:
            tqdm.write(f"{name_of(path):<20}{mode:<8}{variant:<8} error: {exc}")
            continue
        lat = r["latency"]
        r.update(model=name_of(path), mode=mode, variant=variant)
        rows.append(r)
        faster = lat.verdict is Verdict.FASTER
        tqdm.write(f"{r['model']:<20}{mode:<8}{variant:<8}{r['macs']:>7.3f}{lat.median:>9.3f}{lat.ci95[0]:>7.3f}"
                   f"{lat.ci95[1]:>7.3f}{r['off_grid']:>9}{'yes' if faster else 'NO':>7}{r['seconds']:>8.1f}")
    print()
    for variant in variants:
        chosen = [r for r in rows if r["variant"] == variant]
        if not chosen:
            continue
        macs = statistics.mean(r["macs"] for r in chosen)
        lat = statistics.mean(r["latency"].median for r in chosen)
        faster = sum(r["latency"].verdict is Verdict.FASTER for r in chosen)
        print(f"{variant:<7} mean MACs x{macs:.3f}, mean latency x{lat:.3f} ({lat / macs:.2f}x the MACs ratio), "
              f"{faster}/{len(chosen)} faster (95% CI < 1), off-grid widths {sum(r['off_grid'] for r in chosen)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
