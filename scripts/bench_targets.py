#!/usr/bin/env python
"""How close --target-macs / --target-params land, and how long the search takes.

    python scripts/bench_targets.py                       # models/*.onnx
    python scripts/bench_targets.py a.onnx b.onnx --targets 0.7,0.5,0.3 --input-shape x:1x3x640x640

Prints one row per model, metric, ranking (uniform / global) and target: the
fraction of the original reached (measured on the pruned model, after
re-inference), the number of plans the search applied and measured, and the
search time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from onnxprune import onnx_in
from onnxprune.api import Pruner
from onnxprune.errors import OnnxPruneError
from onnxprune.options import PruneOptions

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", default=sorted(str(p) for p in (ROOT / "models").glob("*.onnx")))
    parser.add_argument("--targets", default="0.7,0.5,0.3")
    parser.add_argument("--metrics", default="macs,params")
    parser.add_argument("--input-shape", action="append")
    args = parser.parse_args()
    shapes = onnx_in.parse_input_shapes(args.input_shape)
    targets = [float(t) for t in args.targets.split(",")]
    print(f"{'model':<28} {'metric':<7} {'ranking':<8} {'target':>6} {'reached':>8} {'plans':>5} {'search s':>8}")
    for path in args.models:
        for metric in args.metrics.split(","):
            for global_rank in (False, True):
                for target in targets:
                    pruner = Pruner.load(path, shapes)
                    before = pruner.macs() if metric == "macs" else pruner.params()
                    start = time.perf_counter()
                    try:
                        pruner.prune(PruneOptions(global_rank=global_rank, **{f"target_{metric}": target}))
                    except OnnxPruneError as exc:
                        print(f"{Path(path).stem:<28} {metric:<7} {'global' if global_rank else 'uniform':<8} "
                              f"{target:>6.2f}  {exc}")
                        continue
                    seconds = time.perf_counter() - start
                    after = pruner.macs() if metric == "macs" else pruner.params()
                    search = pruner.searches[-1]
                    print(f"{Path(path).stem:<28} {metric:<7} {'global' if global_rank else 'uniform':<8} "
                          f"{target:>6.2f} {after / before:>8.4f} {search.evaluations:>5} {seconds:>8.2f}",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
