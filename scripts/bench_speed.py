"""What makes a model faster: width, depth, both, each with and without fusion (issue 13's table).

    python scripts/bench_speed.py models/extra/cnn160/resnet50.onnx models/extra/architectures/vit_ts.onnx ...
    python scripts/bench_speed.py --json speed.json --seconds 30 MODEL...

Per model, each variant is pruned as a user would with the Python API:

- ``width``: ``--target-macs 0.5`` (uniform, widths on the provider's grid)
- ``depth``: ``--depth N`` with N a third of the removable blocks (block score: output change on data)
- ``both``: the same N blocks, then width to the same ``--target-macs 0.5`` of the original
- ``+fuse``: the variant, then ``--fuse``; ``fuse`` alone as a reference

Fidelity is the cosine of the outputs on held-out random inputs (the calibration set's held-out
fifth), before and after ``--recover`` (least squares, BatchNorm re-estimation) on the other
four fifths. Latency: the original and every variant of one model timed side by side in one
process (onnxruntime CPU, --threads, pairs of interleaved rounds), each ratio with its 95%
interval: the ratios of one model saw the same machine load.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune import Pruner, latency  # noqa: E402
from onnxprune.calibration import CalibrationSet  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.options import LatencyOptions, PruneOptions  # noqa: E402

VOCAB = 100  # token ids below every bench model's vocabulary
SEQUENCE = 64


def calibration(pruner: Pruner, n: int, seed: int = 0) -> CalibrationSet:
    """Random samples of the analysed input shapes (token ids for integer inputs, masks of ones)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for value in pruner.original_graph.inputs:
        shape = [SEQUENCE if not isinstance(d, int) or d <= 0 else int(d)
                 for d in (pruner.original_graph.values.get(value.name, value).shape or ())[1:]]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.dtype)
        if np.issubdtype(dtype, np.integer):
            arrays[value.name] = (np.ones if "mask" in value.name else
                                  lambda s: rng.integers(1, VOCAB, s))((n, *shape)).astype(dtype)
        else:
            arrays[value.name] = rng.standard_normal((n, *shape)).astype(dtype)
    return CalibrationSet.from_arrays(arrays, pruner.original_graph.inputs)


def variant(path: str, depth: int, target: float | None, fuse: bool, recover: bool,
            data: CalibrationSet) -> tuple[dict, Pruner]:
    pruner = Pruner.load(path)
    start = time.perf_counter()
    if depth or target:
        pruner.prune(PruneOptions(ratio=0.0, depth=depth, target_macs=target), data=data.split(0.2, 0)[0])
    row = {"prune_s": time.perf_counter() - start, "blocks": len(pruner.removed_blocks)}
    if recover and (depth or target):
        result = pruner.recover(data)
        row["cosine"] = result.fidelity_before.cosine
        row["cosine_recovered"] = result.fidelity_after.cosine if result.kept else result.fidelity_before.cosine
        row["recover_s"] = result.seconds
    if fuse:
        pruner.fuse()
    return row, pruner


def bench(path: str, args) -> list[dict]:
    base = Pruner.load(path)
    data = calibration(base, args.samples)
    removable = len([b for b in base.blocks().blocks])
    depth = max(1, removable // 3) if removable else 0
    macs0 = base.macs()
    configs = [("fuse", 0, None, True)]
    configs += [("width", 0, args.target, False), ("width+fuse", 0, args.target, True)]
    if depth:
        configs += [("depth", depth, None, False), ("depth+fuse", depth, None, True),
                    ("both", depth, args.target, False), ("both+fuse", depth, args.target, True)]
    rows, models = [], []
    for name, d, target, fuse in configs:
        try:
            row, pruner = variant(path, d, target, fuse, not fuse, data)
        except OnnxPruneError as exc:
            print(f"  {name}: {exc}", file=sys.stderr)
            continue
        row.update(model=Path(path).stem, variant=name, depth=d, macs=pruner.macs() / macs0,
                   params=pruner.params() / base.params())
        rows.append(row)
        models.append(pruner.to_model())
        print(f"  {name}: MACs x{row['macs']:.3f}" + (f", cosine {row.get('cosine', 1):.4f} -> "
                                                      f"{row.get('cosine_recovered', 1):.4f}" if "cosine" in row else ""),
              file=sys.stderr)
    for row in rows:  # fidelity with recovery is measured on the unfused variant; fusion is exact
        twin = next((r for r in rows if r["variant"] + "+fuse" == row["variant"]), None)
        if twin is not None and "cosine" in twin:
            row["cosine"], row["cosine_recovered"] = twin["cosine"], twin["cosine_recovered"]
    feeds = {k: v[:1] for k, v in data.arrays.items()}
    comparison = latency.compare([path] + models, feeds, threads=args.threads,
                                 options=LatencyOptions(threads=args.threads, max_seconds=args.seconds,
                                                        min_runs=20, spread=0.02))
    for row, ratio in zip(rows, comparison.ratios):
        row["latency"] = ratio.to_dict()
        row["latency_text"] = ratio.text()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | variant | blocks | MACs | params | latency (95% CI) | cosine | after recovery |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cos = f"{r['cosine']:.4f}" if "cosine" in r else "1 (exact)"
        rec = f"{r['cosine_recovered']:.4f}" if "cosine_recovered" in r else "-"
        lines.append(f"| {r['model']} | {r['variant']} | {r['blocks']} | x{r['macs']:.3f} | x{r['params']:.3f} | "
                     f"{r['latency_text']} | {cos} | {rec} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--target", type=float, default=0.5, help="--target-macs of the width variants")
    parser.add_argument("--samples", type=int, default=40, help="calibration samples (a fifth held out)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0, help="latency: time limit per model")
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args(argv)
    rows = []
    for path in args.models:
        print(path, file=sys.stderr)
        rows += bench(path, args)
        print(table(rows), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
