"""The architecture table (issue 9): groups by kind, params/MACs/latency ratios, default and --prune-hidden.

    python scripts/bench_transformers.py                 # the tiny exports in tests/models (latency: noise)
    python scripts/bench_transformers.py --bench         # bench-size exports in models/extra/architectures
    python scripts/bench_transformers.py --bench --export   # export them first (needs torch, transformers,
                                                            # onnxscript: see scripts/export_transformers.py)
    python scripts/bench_transformers.py --json table.json --runs 50

Every model is analysed as a user would run it: no input shapes (batch and
sequence symbolic). Groups are counted by kind: heads, MLP / other channels,
hidden (the residual stream: pruned only with --prune-hidden) and RNN units
(channel groups on an LSTM/GRU/RNN's outputs: its hidden size; the width
feeding an RNN counts as mlp). MACs are counted on
the original and the pruned models at the size the latency is measured at
(batch 1; sequence, node count as --length). Latency ratios are onnxprune.latency's
on CPU at --threads: the original and both pruned models interleaved run by run in
one process (pairs of rounds, the second reversed), so all three see the same
machine load; each ratio with its 95% interval.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune import Pruner  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune import latency  # noqa: E402
from onnxprune.options import LatencyOptions  # noqa: E402

TINY_DIR = ROOT / "tests" / "models"
BENCH_DIR = ROOT / "models" / "extra" / "architectures"
RNN_OPS = {"LSTM", "GRU", "RNN"}
VOCAB = 100  # ids below every model's vocabulary
KINDS = ("heads", "mlp", "hidden", "rnn")


def feeds_for(model, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs at batch 1 and ``length`` for every symbolic dim (edges: 3 x nodes), by input name as exported."""
    rng = np.random.default_rng(seed)
    dims = {"batch": 1, "seq": length, "nodes": length, "edges": 3 * length}
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        shape = [d.dim_value if d.HasField("dim_value") else dims[d.dim_param] for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if vi.name in ("input_ids", "ids"):
            feeds[vi.name] = rng.integers(0, VOCAB, shape).astype(dtype)
        elif vi.name == "attention_mask":
            feeds[vi.name] = np.ones(shape, dtype=dtype)
        elif vi.name == "edge_index":
            feeds[vi.name] = rng.integers(0, length, shape).astype(dtype)
        elif vi.name == "adj":
            a = (rng.random(shape) < 0.3).astype(dtype) + np.eye(shape[0], dtype=dtype)
            feeds[vi.name] = a / a.sum(axis=1, keepdims=True)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def group_kinds(pruner: Pruner) -> dict[str, int]:
    counts = Counter()
    nodes = pruner.graph.node_by_name
    for group in pruner.prunable_groups():
        kind = {"channels": "mlp"}.get(group.kind, group.kind)
        if kind == "mlp" and any(e.node and nodes[e.node].op_type in RNN_OPS and e.port and e.port.side == "out"
                                 for e in group.ends):  # an RNN's own outputs: its hidden units, not its input
            kind = "rnn"
        counts[kind] += 1
    return dict(counts)


def bench_one(path: str, length: int, timing: LatencyOptions, ratio: float) -> dict:
    original = onnx.load(path)
    feeds = feeds_for(original, length)
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    at_size = Pruner.from_model(original, shapes)
    params, macs = at_size.params(), at_size.macs()
    row = {"model": Path(path).stem, "length": length}
    models = [original]
    for hidden in (False, True):
        start = time.perf_counter()
        pruner = Pruner.from_model(original)  # no input shapes: as a user runs it
        if not hidden:
            row["groups"] = group_kinds(pruner)
        pruner.prune(ratio=ratio, prune_hidden=hidden)
        pruned = pruner.to_model()
        key = "hidden" if hidden else "default"
        counted = Pruner.from_model(pruned, shapes)
        row[key] = {"params": counted.params() / params, "macs": counted.macs() / macs,
                    "prune_s": time.perf_counter() - start}
        models.append(pruned)
    sessions = [latency.session(m, "cpu", timing.threads) for m in models]
    outputs = [s.run(None, feeds) for s in sessions]
    for out in outputs[1:]:  # same output shapes as the original at this size
        assert [o.shape for o in out] == [o.shape for o in outputs[0]], row["model"]
    measured = latency.compare(sessions, feeds, options=timing)
    row["ms"], row["runs"] = measured.ms[0], measured.runs
    for key, spread in zip(("default", "hidden"), measured.ratios):
        row[key]["latency"], row[key]["latency_ci95"] = spread.median, list(spread.ci95)
    return row


def _ratio(entry: dict) -> str:
    low, high = entry["latency_ci95"]
    return f"{entry['latency']:.3f} ({low:.2f}-{high:.2f})"


def render(rows: list[dict], title: str) -> str:
    head = (f"| model | len | {' | '.join(KINDS)} | params | MACs | latency | params hid | MACs hid | latency hid "
            f"| ms orig |")
    lines = [title, "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |")
            continue
        d, h = r["default"], r["hidden"]
        kinds = " | ".join(str(r["groups"].get(k, 0)) for k in KINDS)
        lines.append(f"| {r['model']} | {r['length']} | {kinds} | {d['params']:.3f} | {d['macs']:.3f} | "
                     f"{_ratio(d)} | {h['params']:.3f} | {h['macs']:.3f} | {_ratio(h)} | {r['ms']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="ONNX files (default: tests/models, or the bench-size exports)")
    parser.add_argument("--bench", action="store_true", help="the bench-size exports in models/extra/architectures")
    parser.add_argument("--export", action="store_true", help="with --bench: export them first (TorchScript)")
    parser.add_argument("--length", type=int, help="sequence length / node count (default: 12 tiny, 128 bench)")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=30, help="at least this many interleaved runs per model")
    parser.add_argument("--latency-time", type=float, default=10.0, help="seconds per model set, at most")
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime threads (default 1: on a shared machine, thread pools that wait "
                             "on busy cores make medians noise)")
    parser.add_argument("--json", help="write the rows as JSON too")
    args = parser.parse_args(argv)
    if args.export:
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "export_transformers.py"), "--bench",
                               "--exporters", "ts"])
        if done.returncode:
            print("export failed (see above)", file=sys.stderr)
    folder = BENCH_DIR if args.bench else TINY_DIR
    paths = args.models or sorted(glob.glob(str(folder / "*.onnx")))
    if not paths:
        print(f"no models in {folder} (export them: --bench --export)", file=sys.stderr)
        return 1
    length = args.length or (128 if args.bench else 12)
    timing = LatencyOptions(threads=args.threads, min_runs=args.runs, max_runs=max(args.runs, 1000),
                            max_seconds=args.latency_time).check()
    rows = []
    for path in paths:
        try:
            rows.append(bench_one(path, length, timing, args.ratio))
        except (OnnxPruneError, AssertionError) as exc:
            rows.append({"model": Path(path).stem, "error": str(exc).splitlines()[0] if str(exc) else repr(exc)})
        print(f"done {rows[-1]['model']}", file=sys.stderr, flush=True)
    title = (f"ratio {args.ratio}; {'bench-size' if args.bench else 'tiny test'} models, batch 1, length {length}; "
             f"onnxruntime CPU, {args.threads} thread(s), latency ratio (95% CI) over >= {args.runs} interleaved "
             f"runs or {args.latency_time:g}s, {os.cpu_count()} CPUs")
    print(render(rows, title))
    if args.json:
        Path(args.json).write_text(json.dumps({"title": title, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
