#!/usr/bin/env python
"""--target-latency R: width only against depth and width searched together, timed side by side.

    nice -n 10 python scripts/bench_target_latency.py models/extra/speed/resnet50_112_fanin.onnx \
        models/extra/speed/mobilenet_v2_112_fanin.onnx --target 0.6 --json out.json

Per model: ``--target-latency R --no-depth-search`` (width only) and ``--target-latency R``
(depth and width, onnxprune.depthwidth), pruned with the Python API as the CLI does (no
calibration data: the MACs-kept proxy ranks the candidates). Then the original and both
prunes are timed in one process, interleaved (onnxruntime CPU, --threads), each ratio with
its 95% interval; the cosine of the outputs against the original on random inputs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune import Pruner, latency  # noqa: E402
from onnxprune.options import LatencyOptions, PruneOptions  # noqa: E402


def variant(path: str, target: float, depth_search: bool, timing: LatencyOptions) -> tuple[dict, Pruner]:
    pruner = Pruner.load(path)
    macs0, start = pruner.macs(), time.perf_counter()
    pruner.prune(PruneOptions(target_latency=target, depth_search=depth_search, latency=timing))
    row = {"model": Path(path).stem, "variant": "depth+width" if depth_search else "width", "target": target,
           "search_s": time.perf_counter() - start, "blocks": len(pruner.removed_blocks),
           "channels": sum(p.removed_channels for p in pruner.plans), "macs": pruner.macs() / macs0,
           "cosine": pruner.fidelity().cosine}
    found = pruner.searches[-1].depth_width
    if found is not None:
        row["candidates"] = [{"depth": c.depth, "what": c.label(), "macs": c.macs, "latency": c.latency.text()}
                             for c in found.candidates]
    return row, pruner


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--target", type=float, default=0.6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--search-seconds", type=float, default=10.0, help="--latency-time of the searches")
    parser.add_argument("--seconds", type=float, default=60.0, help="the final side-by-side timing's limit")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    timing = LatencyOptions(threads=args.threads, max_seconds=args.search_seconds)
    rows = []
    for path in args.models:
        pruned = []
        for depth_search in (False, True):
            row, pruner = variant(path, args.target, depth_search, timing)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
            pruned.append(pruner)
        feeds = pruned[0].feeds(seed=0)
        comparison = latency.compare([path] + [p.to_model() for p in pruned], feeds, threads=args.threads,
                                     options=LatencyOptions(threads=args.threads, max_seconds=args.seconds,
                                                            min_runs=20, spread=0.01))
        for row, ratio in zip(rows[-2:], comparison.ratios):
            row["latency"], row["latency_text"] = ratio.to_dict(), ratio.text()
            row["runs"], row["loadavg"] = comparison.runs, os.getloadavg()
    print("| model | variant | blocks | channels | MACs | latency (95% CI) | cosine | search s | loadavg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['blocks']} | {r['channels']} | x{r['macs']:.3f} | "
              f"{r['latency_text']} | {r['cosine']:.4f} | {r['search_s']:.0f} | "
              f"{' '.join(f'{x:.1f}' for x in r['loadavg'])} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
