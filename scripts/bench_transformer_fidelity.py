#!/usr/bin/env python
"""Output fidelity of a real pretrained Transformer after pruning, with and without recovery.

For a sentence encoder fetched by ``scripts/fetch_models.py`` (default ``minilm``:
paraphrase-MiniLM-L3-v2 from a PyPI wheel), per criterion and MACs target: prune
(heads + MLP width, the defaults) with the calibration sentences, measure, then
recover (``Pruner.recover``: bias compensation, least squares, BN) and measure again.
On the *held-out* sentences (other sources than the calibration ones) it reports:

* embedding cosine: cosine between the pruned and the original model's sentence
  embeddings (the graph's mean pooling over tokens with the attention mask, as
  sentence-transformers does), mean and min over sentences;
* token cosine: the same for the token states, over real (unpadded) tokens;
* criteria: uniform ratio per group (``l2``, ``output``, ``reconstruction``) or
  ``NAME:global`` (channels ranked across groups, at most ``--max-ratio`` of a group);
* MACs and parameter ratios as onnxprune counts them (symbolic sequence length
  at the analysis stand-in), onnxruntime CPU latency ratio on a held-out batch,
  timed side by side (onnxprune.latency: interleaved pairs of rounds at --threads,
  with its 95% interval), and the seconds recovery took.

    python scripts/fetch_models.py minilm
    python scripts/bench_transformer_fidelity.py [--criteria l2,reconstruction:global] [--targets 0.7,0.5]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxprune import Pruner, latency
from onnxprune.calibration import CalibrationSet
from onnxprune.options import LatencyOptions

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Row:
    criterion: str
    target: float
    recovered: bool
    macs_ratio: float
    params_ratio: float
    latency_ratio: float
    emb_cos_mean: float
    emb_cos_min: float
    tok_cos_mean: float
    tok_cos_min: float
    recover_s: float | None = None
    prune_s: float | None = None
    latency_ci95: list | None = None
    weighting: str | None = None  # recovery's row weighting (RecoveryOptions.weighting); None: not recovered
    hidden: bool = False  # the hidden size pruned too (--prune-hidden)
    refit_norms: bool | None = None  # recovery re-fitted the normalizations' scale and shift (RecoveryOptions)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


class Encoder:
    """One onnxruntime session; outputs for feeds in batches."""

    def __init__(self, model_bytes: bytes, outputs: list[str], threads: int):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = threads
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        self.outputs = outputs

    def run(self, feeds: dict[str, np.ndarray], batch: int = 64) -> list[np.ndarray]:
        n = len(next(iter(feeds.values())))
        parts = [self.session.run(self.outputs, {k: v[i:i + batch] for k, v in feeds.items()})
                 for i in range(0, n, batch)]
        return [np.concatenate(p) for p in zip(*parts)]


def latency_ratio(original: Encoder, pruned: Encoder, feeds, runs: int, threads: int) -> latency.RatioSpread:
    """Pruned over original time, side by side (onnxprune.latency), with its 95% interval."""
    timing = LatencyOptions(threads=threads, min_runs=runs, max_runs=max(runs, 1000)).check()
    return latency.compare([original.session, pruned.session], feeds, options=timing).spread


class Bench:
    def __init__(self, folder: Path, runs: int, threads: int):
        self.meta = json.loads((folder / f"{folder.name}.json").read_text())
        self.model_path = folder / self.meta["model"]
        self.outputs = [self.meta["embedding_output"], self.meta["token_output"]]
        with np.load(folder / "calib.npz") as f:
            self.calib_arrays = {k: f[k] for k in f.files}
        with np.load(folder / "heldout.npz") as f:
            self.heldout = {k: f[k] for k in f.files}
        self.mask = self.heldout["attention_mask"].astype(bool)
        self.runs, self.threads = runs, threads
        self.base = Pruner.load(self.model_path)
        self.calib = CalibrationSet.from_arrays(self.calib_arrays, self.base.original_graph.inputs)
        self.macs0, self.params0 = self.base.macs(), self.base.params()
        self.original = Encoder(self.model_path.read_bytes(), self.outputs, threads)
        self.reference = self.original.run(self.heldout)
        self.timing_feeds = {k: v[:64] for k, v in self.heldout.items()}

    def measure(self, p: Pruner, criterion: str, target: float, recovered: bool, **extra) -> Row:
        pruned = Encoder(p.to_model().SerializeToString(), self.outputs, self.threads)
        emb, tok = pruned.run(self.heldout)
        emb_cos = cosines(emb, self.reference[0])
        tok_cos = cosines(tok, self.reference[1])[self.mask]
        timed = latency_ratio(self.original, pruned, self.timing_feeds, self.runs, self.threads)
        return Row(criterion, target, recovered, p.macs() / self.macs0, p.params() / self.params0, timed.median,
                   float(emb_cos.mean()), float(emb_cos.min()), float(tok_cos.mean()), float(tok_cos.min()),
                   latency_ci95=list(timed.ci95), **extra)

    def rows(self, criterion: str, target: float, max_ratio: float, weightings=("auto",),
             hidden: bool = False, norms=(True,)) -> list[Row]:
        """``criterion``: a criterion name, ``:global`` after it ranks channels across groups; the
        pruned model is recovered once per row weighting (RecoveryOptions.weighting)."""
        pruned = copy.deepcopy(self.base)
        start = time.perf_counter()
        name, _, ranking = criterion.partition(":")
        data = self.calib if name not in ("l1", "l2", "random") else None
        ranked = {"global_rank": True, "max_ratio": max_ratio} if ranking == "global" else {}
        pruned.prune(target_macs=target, criterion=name, data=data, prune_hidden=hidden, **ranked)
        prune_s = time.perf_counter() - start
        rows = [self.measure(pruned, criterion, target, False, prune_s=prune_s, hidden=hidden)]
        for weighting, refit_norms in ((w, n) for w in weightings for n in norms):
            p = copy.deepcopy(pruned)
            start = time.perf_counter()
            result = p.recover(self.calib, weighting=weighting, refit_norms=refit_norms)
            recover_s = time.perf_counter() - start
            if not result.kept:
                print(f"  {criterion} {target}: recovery made held-out calibration fidelity worse; not applied",
                      file=sys.stderr)
            rows.append(self.measure(p, criterion, target, True, recover_s=recover_s, prune_s=prune_s,
                                     weighting=weighting, hidden=hidden, refit_norms=refit_norms))
        return rows


def _ci(interval: list | None) -> str:
    return "" if interval is None else f" ({interval[0]:.2f}-{interval[1]:.2f})"


def table(rows: list[Row]) -> str:
    head = ("| criterion | MACs target | recovery (weighting) | MACs | params | latency | emb cos mean | emb cos min "
            "| token cos mean | token cos min | recovery s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        recovery = "no" if not r.recovered else "yes" if not r.weighting else \
            f"yes ({r.weighting}{', norms off' if r.refit_norms is False else ''})"
        criterion = r.criterion + (" +hidden" if r.hidden else "")
        lines.append(f"| {criterion} | {r.target:.2f} | {recovery} | x{r.macs_ratio:.3f} "
                     f"| x{r.params_ratio:.3f} | x{r.latency_ratio:.3f}{_ci(r.latency_ci95)} | {r.emb_cos_mean:.4f} | {r.emb_cos_min:.4f} "
                     f"| {r.tok_cos_mean:.4f} | {r.tok_cos_min:.4f} "
                     f"| {'' if r.recover_s is None else f'{r.recover_s:.1f}'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-set", default="minilm", help="a folder under models/extra (default: minilm)")
    ap.add_argument("--criteria", default="l2,output,reconstruction,reconstruction:global",
                    help="criteria, comma-separated; NAME:global ranks channels across groups (--global)")
    ap.add_argument("--max-ratio", type=float, default=0.85, help="cap per group under global ranking")
    ap.add_argument("--targets", default="0.7,0.5")
    ap.add_argument("--runs", type=int, default=20, help="at least this many interleaved runs per model when timing")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra- and inter-op threads when timing")
    ap.add_argument("--weighting", default="auto",
                    help="recovery's row weightings to compare, comma-separated (auto, none; default auto)")
    ap.add_argument("--prune-hidden", action="store_true", help="prune the hidden size too (inexact: LayerNorm)")
    ap.add_argument("--compare-norms", action="store_true",
                    help="recover with and without re-fitting the normalizations' scale and shift")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_transformer_fidelity.json"))
    ap.add_argument("--table-from", metavar="RESULTS.json", help="print the table of an earlier run")
    args = ap.parse_args(argv)
    folder = ROOT / "models" / "extra" / args.model_set
    if args.table_from:
        rows = [Row(**r) for r in json.loads(Path(args.table_from).read_text())["rows"]]
        print(table(rows))
        return 0
    if not (folder / "model.onnx").exists():
        raise SystemExit(f"bench_transformer_fidelity: no {folder}/model.onnx (run scripts/fetch_models.py "
                         f"{args.model_set})")
    bench = Bench(folder, args.runs, args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for criterion in args.criteria.split(","):
        for target in (float(t) for t in args.targets.split(",")):
            print(f"{criterion} macs {target}", file=sys.stderr)
            rows += bench.rows(criterion, target, args.max_ratio, args.weighting.split(","), args.prune_hidden,
                               (True, False) if args.compare_norms else (True,))
            out.write_text(json.dumps({"model_set": args.model_set, "source": bench.meta["source"],
                                       "heldout_sentences": len(bench.mask),
                                       "rows": [dataclasses.asdict(r) for r in rows]}, indent=1) + "\n")
    print(table(rows))
    print(f"held-out: {len(bench.mask)} sentences, {int(bench.mask.sum())} tokens; results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
