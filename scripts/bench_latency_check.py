"""Check the prune summary's latency ratio against an independent measurement of the same two files.

    python scripts/bench_latency_check.py                        # bundled models pruned at --ratio 0.5
    python scripts/bench_latency_check.py orig.onnx:pruned.onnx  # pairs of files (the summary's code on them)
    python scripts/bench_latency_check.py --repeat 3 --seconds 30 -- --threads 1 --latency-time 5

For each pair, in one run: the summary's figure (the bundled models are pruned
with the CLI and the ratio read from its report; for given pairs, the code the
summary uses, onnxprune.validate.validate, times the two files), then an
independent measurement written here with plain onnxruntime and none of
onnxprune's timing code: one intra- and inter-op thread, warm-up, the two
models interleaved in ABBA blocks (original, pruned, pruned, original) for a
fixed time, the median over blocks of the pruned model's time over the
original's with a bootstrap 95% interval; and, as a cross-check that needs no
pairing, the ratio of the two fastest runs (the least disturbed by other
processes). Both are printed with their spreads; the goal (issue 13) is the
summary within 10% of the independent figure.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune.cli import _latency_options, build_parser, main as onnxprune_main  # noqa: E402
from onnxprune.options import LatencyOptions  # noqa: E402
from onnxprune.validate import make_inputs, validate  # noqa: E402
from onnxprune import onnx_in  # noqa: E402

BUNDLED = ("resnet_small", "mobilenetv2_small")
GOAL = 0.10  # the summary within 10% of the independent ratio


def independent_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def random_feeds(sess: ort.InferenceSession, seed: int = 1) -> dict[str, np.ndarray]:
    """Inputs from the session's own declared shapes (symbolic dims: 1), float inputs only."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        if inp.type != "tensor(float)":
            raise SystemExit(f"{inp.name}: only float inputs are supported here ({inp.type})")
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def timed(sess: ort.InferenceSession, feeds) -> float:
    t0 = time.perf_counter()
    sess.run(None, feeds)
    return time.perf_counter() - t0


def independent_ratio(original: Path, pruned: Path, seconds: float, warmup: int = 10, seed: int = 0) -> dict:
    """Single-thread ABBA blocks for ``seconds``: pruned/original per block, median, bootstrap CI."""
    a, b = independent_session(original), independent_session(pruned)
    feeds = random_feeds(a)
    for _ in range(warmup):
        a.run(None, feeds), b.run(None, feeds)
    ta, tb = [], []  # per block: the two runs of each model, summed
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(ta) < 10:
        a1, b1 = timed(a, feeds), timed(b, feeds)
        b2, a2 = timed(b, feeds), timed(a, feeds)
        ta.append([a1, a2])
        tb.append([b1, b2])
    ta, tb = np.array(ta), np.array(tb)
    ratios = tb.sum(1) / ta.sum(1)
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(ratios, size=(2000, len(ratios)), replace=True), axis=1)
    return {"ratio": float(np.median(ratios)), "ci95": [float(x) for x in np.percentile(boot, [2.5, 97.5])],
            "iqr": [float(x) for x in np.percentile(ratios, [25, 75])], "runs": ta.size,
            "ms_before": float(np.median(ta)) * 1000, "ms_after": float(np.median(tb)) * 1000,
            "fastest_ratio": float(tb.min() / ta.min())}


def summary_by_cli(model: Path, out: Path, ratio: float, extra: list[str]) -> dict:
    """Prune with the CLI as a user does; the summary's latency as its report records it."""
    report = out.with_suffix(".json")
    with contextlib.redirect_stdout(io.StringIO()):  # the summary prints what the report holds
        code = onnxprune_main([str(model), str(out), "--ratio", str(ratio), "--report", str(report), "-q", *extra])
    if code != 0:
        raise SystemExit(f"onnxprune failed on {model} (exit {code})")
    return json.loads(report.read_text())["latency"]


def summary_by_validate(original: Path, pruned: Path, latency: LatencyOptions) -> dict:
    """What the summary would print for these two files: onnxprune.validate.validate on them."""
    graph = onnx_in.to_graph(onnx_in.open_model(original).load())
    feeds = make_inputs(graph)
    result = validate(onnx_in.open_model(original).load(), onnx_in.open_model(pruned).load(), feeds,
                      runs=latency.min_runs, latency=latency)
    return result.latency.to_dict()


def row(name: str, summary: dict, independent: dict) -> str:
    lo, hi = summary["ratio_ci95"]
    ilo, ihi = independent["ci95"]
    diff = summary["ratio"] / independent["ratio"] - 1
    return (f"| {name} | x{summary['ratio']:.3f} ({lo:.3f}-{hi:.3f}) | {summary['runs']} | "
            f"{summary['ms_before']:.2f} -> {summary['ms_after']:.2f} | "
            f"x{independent['ratio']:.3f} ({ilo:.3f}-{ihi:.3f}) | {independent['runs']} | "
            f"{independent['ms_before']:.2f} -> {independent['ms_after']:.2f} | {100 * diff:+.1f}% | "
            f"{'yes' if abs(diff) <= GOAL else 'NO'} | x{independent['fastest_ratio']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # options for the summary's measurement
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pairs", nargs="*", metavar="ORIG:PRUNED", help="pairs of ONNX files (default: bundled)")
    parser.add_argument("--ratio", type=float, default=0.5, help="prune ratio for the bundled models")
    parser.add_argument("--seconds", type=float, default=20.0, help="independent measurement time per pair")
    parser.add_argument("--repeat", type=int, default=1, help="measure every pair this many times")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.epilog = "after --: onnxprune options for the summary's measurement (e.g. -- --latency-time 5)"
    args = parser.parse_args(argv)
    summary_options = _latency_options(build_parser().parse_args(["prune", "in.onnx", "out.onnx", *extra]))
    print(f"summary: onnxprune ({summary_options.threads} thread, >= {summary_options.min_runs} runs, CI "
          f"half-width {summary_options.spread:g} or {summary_options.max_seconds:g}s){' ' + ' '.join(extra) if extra else ''}; "
          f"independent: 1 thread, ABBA blocks, {args.seconds:g}s, bootstrap CI\n")
    print("| pair | summary ratio (95% CI) | runs | ms | independent ratio (95% CI) | runs | ms | diff | within 10% "
          "| fastest runs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = ([(p.split(":")[0], p.split(":")[1]) for p in args.pairs] if args.pairs
                else [(str(ROOT / "models" / f"{m}.onnx"), None) for m in BUNDLED])
        for _ in range(args.repeat):
            for original, pruned in jobs:
                original = Path(original)
                if pruned is None:
                    out = Path(tmp) / f"{original.stem}.pruned.onnx"
                    summary = summary_by_cli(original, out, args.ratio, extra)
                    pruned, name = out, f"{original.stem} --ratio {args.ratio:g}"
                else:
                    pruned, name = Path(pruned), f"{original.name} : {Path(pruned).name}"
                    summary = summary_by_validate(original, pruned, summary_options)
                independent = independent_ratio(original, pruned, args.seconds)
                print(row(name, summary, independent), flush=True)
                rows.append({"pair": name, "summary": summary, "independent": independent})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
