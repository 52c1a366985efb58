"""Benchmark: prune each example model and print time, params/MACs/latency ratios side by side.

    python scripts/bench.py                      # models/*.onnx
    python scripts/bench.py models/extra/*.onnx  # larger models from scripts/export_models.py --extra
    python scripts/bench.py --provider cuda --ratio 0.5 --runs 50

Latency of the original and the pruned model is measured as the prune summary
does (onnxprune.latency): same process, same inputs, --threads fixed,
interleaved in pairs of rounds until the ratio's 95% interval is narrow; the
ratio is printed with that interval.
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxprune import Pruner, PruneOptions  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.options import LatencyOptions  # noqa: E402


def bench_one(path: str, options: PruneOptions, provider: str, timing: LatencyOptions) -> dict:
    start = time.perf_counter()
    pruner = Pruner.load(path)
    params, macs = pruner.params(), pruner.macs()
    groups = len(pruner.prunable_groups())
    pruner.prune(options)
    prune_s = time.perf_counter() - start
    result = pruner.validate(provider=provider, runs=timing.min_runs, latency=timing)
    return {
        "model": Path(path).stem, "groups": groups, "prune_s": prune_s,
        "params": pruner.params() / params, "macs": pruner.macs() / macs,
        "latency": result.latency_ratio, "ci": result.latency.spread.ci95, "ms_before": result.latency_ms_before,
        "ms_after": result.latency_ms_after,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="ONNX files (default: models/*.onnx)")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--criterion", default="l2")
    parser.add_argument("--round-to", type=int, default=1)
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--runs", type=int, default=30, help="at least this many interleaved runs per model")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the timed sessions")
    args = parser.parse_args()
    paths = args.models or sorted(glob.glob(str(Path(__file__).resolve().parent.parent / "models" / "*.onnx")))
    options = PruneOptions(ratio=args.ratio, criterion=args.criterion, round_to=args.round_to)
    timing = LatencyOptions(threads=args.threads, min_runs=args.runs, max_runs=max(args.runs, 1000)).check()
    header = (f"{'model':<22}{'groups':>7}{'prune s':>9}{'params':>8}{'MACs':>8}{'latency':>9}{'95% CI':>14}"
              f"{'ms before':>11}{'ms after':>10}")
    print(f"ratio {args.ratio}, criterion {args.criterion}, provider {args.provider}, >= {args.runs} runs, "
          f"{args.threads} thread(s)\n{header}")
    for path in paths:
        try:
            r = bench_one(path, options, args.provider, timing)
        except OnnxPruneError as exc:
            print(f"{Path(path).stem:<22} error: {exc}")
            continue
        print(f"{r['model']:<22}{r['groups']:>7}{r['prune_s']:>9.2f}{r['params']:>8.3f}{r['macs']:>8.3f}"
              f"{r['latency']:>9.3f}{r['ci'][0]:>8.3f}-{r['ci'][1]:.3f}{r['ms_before']:>11.2f}{r['ms_after']:>10.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
