#!/usr/bin/env python
"""Depth + width (+ fusion) against width only, on real models: held-out accuracy and CPU latency.

Issue 13's goal: at held-out accuracy within 1 point of the original, is a prune that removes
residual blocks (``--depth N``, or ``--target-latency F``, which searches depth and width
together) faster than the best width-only prune? For each model set of
``scripts/bench_accuracy.py`` (``scripts/fetch_models.py orientation ppocr_rec``), through the
public API as the CLI runs it (``--calib --recover``, defaults otherwise: reconstruction
criterion, the width grid, the never-slower check):

* width only: ``--target-macs T`` for each of ``--targets``; ``--target-latency F
  --no-depth-search`` for each of ``--latency-targets``;
* depth (+ width): ``--depth N`` alone and with each of ``--depth-targets`` (MACs, of the
  original's); ``--target-latency F`` (depth searched with the width);
* every prune again with ``--fuse`` (fusion is exact, so the accuracy is re-measured only as a check).

Each row: MACs ratio, held-out task accuracy (``scripts/task_metrics.py``: top-1, or character
accuracy for the recogniser), and the CPU latency ratio against the original (onnxruntime, 1 thread,
the two models interleaved: ``onnxprune.latency.compare``, median and 95% interval) with the load
average when it was measured (a shared machine: the ratio comes from paired rounds and holds under
load; the milliseconds do not). Per model the fastest width-only and the fastest depth prune within
1 point of the original are picked, then timed against each other directly (the depth pick's latency
over the width pick's, interleaved) so that the verdict does not rest on two separate measurements.

    python scripts/bench_depth_width.py --models orientation
    python scripts/bench_depth_width.py --models ppocr_rec --calib-samples 32 --depths 2 4 8
    python scripts/bench_depth_width.py --table-from out/bench_depth_width/results.json
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from onnxprune import Pruner, PruneOptions
from onnxprune import latency as timing
from onnxprune.options import LatencyOptions, default_criterion

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy import ModelSet, _progress  # noqa: E402  (a sibling script module)

ROOT = Path(__file__).resolve().parents[1]
WITHIN = 0.01  # the goal: held-out accuracy within 1 point of the original


@dataclass
class Row:
    model: str
    name: str  # the configuration, as CLI options
    family: str  # "original", "width" (no blocks removed) or "depth" (blocks removed)
    fused: bool = False
    blocks: int = 0  # residual blocks removed
    removed: str = ""  # their join nodes, in the order removed
    search: str = ""  # what the target search measured (the latency a --target-latency search saw)
    macs_ratio: float = float("nan")
    accuracy: float = float("nan")
    latency: float = float("nan")  # median ratio to the original
    ci95: tuple[float, float] = (float("nan"), float("nan"))
    ms: tuple[float, float] = (float("nan"), float("nan"))  # original, pruned (disturbed under load)
    runs: int = 0
    load: str = ""  # /proc/loadavg's 1-minute figure when the latency was measured
    prune_s: float = float("nan")
    recover_s: float = float("nan")
    cosine: float = float("nan")  # recovery's held-out fidelity after
    error: str = ""
    file: str = ""


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


@dataclass
class Bench:
    mset: ModelSet
    calib_samples: int | None
    targets: tuple[float, ...]
    depths: tuple[int, ...]
    depth_targets: tuple[float, ...]
    latency_targets: tuple[float, ...]
    timing: LatencyOptions
    search_timing: LatencyOptions
    out: Path
    rows: list[Row] = field(default_factory=list)
    save: callable = None

    def configs(self, blocks: int) -> list[tuple[str, str, dict]]:
        """(name, family, PruneOptions fields) of every prune to measure; depth ones only where blocks exist."""
        crit = default_criterion(True, True)
        depths = [d for d in self.depths if d <= blocks]
        # cheapest first (a run stopped at the deadline keeps both families): depth alone, width, both, latency
        configs = [(f"--depth {n}", "depth", dict(depth=n, ratio=0.0)) for n in depths]
        configs += [(f"--target-macs {t}", "width", dict(target_macs=t)) for t in self.targets]
        configs += [(f"--depth {n} --target-macs {t}", "depth", dict(depth=n, target_macs=t))
                    for n in depths for t in self.depth_targets]
        for f in self.latency_targets:
            configs.append((f"--target-latency {f} --no-depth-search", "width",
                            dict(target_latency=f, depth_search=False, latency=self.search_timing)))
            if blocks:
                configs.append((f"--target-latency {f}", "depth", dict(target_latency=f, latency=self.search_timing)))
        return [(n, fam, dict(criterion=crit, **o)) for n, fam, o in configs]

    def run(self) -> None:
        mset = self.mset
        x, y = mset.arrays("heldout")
        base = Pruner.load(mset.model_path, input_shapes=mset.input_shapes)
        calib = base.load_calibration(mset.folder / "calib.npz")
        if self.calib_samples:
            calib = calib.take(self.calib_samples)
        feeds = {mset.meta["input"]: x[:1]}
        macs0 = base.macs()
        blocks = len(base.blocks().blocks)
        print(f"{mset.name}: {blocks} removable residual blocks, MACs {macs0 / 1e6:.1f} M, "
              f"{calib.n_samples} calibration samples", file=sys.stderr, flush=True)
        original = Row(mset.name, "original", "original", macs_ratio=1.0, latency=1.0,
                       accuracy=mset.accuracy(mset.model_path.read_bytes(), x, y), file=str(mset.model_path))
        self._add(original)
        configs = self.configs(blocks)
        bar = _progress(len(configs))
        for name, family, fields in configs:
            bar.set_description(f"{mset.name} {name}")
            pruner = copy.deepcopy(base)
            row = Row(mset.name, name, family)
            try:
                start = time.perf_counter()
                pruner.prune(PruneOptions(**fields), data=calib)
                row.prune_s = time.perf_counter() - start
                result = pruner.recover(calib)
                row.recover_s, row.cosine = result.seconds, result.fidelity_after.cosine
                row.blocks = len(pruner.removed_blocks)
                row.removed = " ".join(b["join"] for b in pruner.removed_blocks)
                if pruner.searches:
                    found = pruner.searches[-1]
                    row.search = (f"{found.metric} x{found.reached:.3f} at level {found.level:.3f}, "
                                  f"{found.evaluations} evaluations, {found.seconds:.0f} s")
                self._measure(row, pruner, macs0, x, y, feeds)
                fused = copy.deepcopy(row)
                fused.name, fused.fused = name + " --fuse", True
                pruner.fuse()
                self._measure(fused, pruner, macs0, x, y, feeds)
            except Exception as exc:  # one failing configuration must not hide the others
                row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                print(f"{mset.name} {name}: {row.error}", file=sys.stderr, flush=True)
                self._add(row)
            bar.update(1)
        bar.close()

    def _measure(self, row: Row, pruner: Pruner, macs0: int, x, y, feeds) -> None:
        model = pruner.to_model()
        path = self.out / f"{self.mset.name}_{len(self.rows):02d}.onnx"
        path.write_bytes(model.SerializeToString())
        row.file = str(path)
        row.macs_ratio = pruner.macs() / macs0
        row.accuracy = self.mset.accuracy(path.read_bytes(), x, y)
        row.load = loadavg()
        comparison = timing.compare([self.mset.model_path, model], feeds, "cpu", options=self.timing)
        row.latency, row.ci95 = comparison.ratio, comparison.spread.ci95
        row.ms, row.runs = (comparison.ms_before, comparison.ms_after), comparison.runs
        row.load += f"/{loadavg()}"
        self._add(row)

    def _add(self, row: Row) -> None:
        self.rows.append(row)
        print(line(row), file=sys.stderr, flush=True)
        if self.save is not None:
            self.save()


# ---------------------------------------------------------------- verdict

def eligible(rows: list[Row], base: Row, family: str) -> list[Row]:
    return [r for r in rows if r.family == family and not r.error and r.accuracy >= base.accuracy - WITHIN - 1e-9]


def picks(rows: list[Row]) -> dict[str, tuple[Row, Row | None, Row | None]]:
    """Per model: (original, fastest width-only, fastest depth) within 1 point of the original."""
    out = {}
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        base = next((r for r in mine if r.family == "original"), None)
        if base is None:
            continue
        best = {f: min(eligible(mine, base, f), key=lambda r: r.latency, default=None) for f in ("width", "depth")}
        out[model] = (base, best["width"], best["depth"])
    return out


def head_to_head(width: Row, depth: Row, feeds, options: LatencyOptions) -> dict:
    """The depth pick's latency over the width pick's, the two timed interleaved in one run."""
    load = loadavg()
    c = timing.compare([width.file, depth.file], feeds, "cpu", options=options)
    return {"width": width.name, "depth": depth.name, "ratio": c.ratio, "ci95": list(c.spread.ci95),
            "verdict": c.verdict.value, "runs": c.runs, "load": f"{load}/{loadavg()}"}


# ---------------------------------------------------------------- output

def line(r: Row) -> str:
    if r.error:
        return f"  {r.model:12s} {r.name:45s} failed: {r.error}"
    return (f"  {r.model:12s} {r.name:45s} blocks {r.blocks:2d}  MACs x{r.macs_ratio:.3f}  acc {100 * r.accuracy:6.2f}%"
            f"  latency x{r.latency:.3f} [{r.ci95[0]:.3f}-{r.ci95[1]:.3f}]  load {r.load}")


def table(rows: list[Row]) -> str:
    lines = ["| model | prune (`--calib --recover` and) | blocks | MACs | held-out acc % | latency (95% CI) "
             "| ms orig/pruned | load 1m | prune s | recover s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.error:
            lines.append(f"| {r.model} | `{r.name}` | failed: {r.error} |||||||")
            continue
        if r.family == "original":
            lines.append(f"| {r.model} | original | - | x1.000 | {100 * r.accuracy:.2f} | x1 | - | - | - | - |")
            continue
        lines.append(f"| {r.model} | `{r.name}` | {r.blocks} | x{r.macs_ratio:.3f} | {100 * r.accuracy:.2f} "
                     f"| x{r.latency:.3f} ({r.ci95[0]:.3f}-{r.ci95[1]:.3f}) | {r.ms[0]:.2f}/{r.ms[1]:.2f} "
                     f"| {r.load} | {r.prune_s:.0f} | {r.recover_s:.0f} |")
    return "\n".join(lines)


def verdicts(rows: list[Row], duels: dict[str, dict]) -> str:
    out = []
    for model, (base, width, depth) in picks(rows).items():
        floor = 100 * (base.accuracy - WITHIN)
        say = [f"{model} (original {100 * base.accuracy:.2f}%, floor {floor:.2f}%):"]
        say.append(f"  fastest width-only: " + (f"`{width.name}` x{width.latency:.3f} "
                                                 f"({width.ci95[0]:.3f}-{width.ci95[1]:.3f}), {100 * width.accuracy:.2f}%"
                                                 if width else "none within 1 point"))
        if not any(r.family == "depth" for r in rows if r.model == model):
            say.append("  depth: no prune with removed blocks was run (the model has no removable blocks)")
        else:
            say.append(f"  fastest with depth:  " + (f"`{depth.name}` x{depth.latency:.3f} "
                                                      f"({depth.ci95[0]:.3f}-{depth.ci95[1]:.3f}), "
                                                      f"{100 * depth.accuracy:.2f}%, {depth.blocks} blocks"
                                                      if depth else "none within 1 point"))
        duel = duels.get(model)
        if duel:
            word = {"faster": "depth FASTER than width-only", "slower": "depth SLOWER than width-only",
                    "no measurable change": "no measurable difference"}.get(duel["verdict"], duel["verdict"])
            say.append(f"  head to head (depth pick over width pick, interleaved, {duel['runs']} runs, load "
                       f"{duel['load']}): x{duel['ratio']:.3f} ({duel['ci95'][0]:.3f}-{duel['ci95'][1]:.3f}): {word}")
        out.append("\n".join(say))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["orientation", "ppocr_rec"], help="model sets (bench_accuracy's)")
    ap.add_argument("--targets", nargs="*", type=float, default=[0.8, 0.7, 0.6, 0.5], help="width-only MACs targets")
    ap.add_argument("--depths", nargs="*", type=int, default=[1, 2, 4], help="--depth N values")
    ap.add_argument("--depth-targets", nargs="*", type=float, default=[0.7], help="MACs targets with --depth N")
    ap.add_argument("--latency-targets", nargs="*", type=float, default=[0.7], help="--target-latency values")
    ap.add_argument("--calib-samples", type=int, help="calibration samples (default: the set's all)")
    ap.add_argument("--latency-time", type=float, default=15.0, help="seconds per measured latency ratio (at most)")
    ap.add_argument("--search-time", type=float, default=6.0, help="--latency-time of --target-latency's searches")
    ap.add_argument("--out-dir", default=str(ROOT / "out" / "bench_depth_width"))
    ap.add_argument("--table-from", metavar="RESULTS.json", help="print the table and verdicts of an earlier run")
    args = ap.parse_args(argv)
    measure = LatencyOptions(threads=1, min_runs=20, max_seconds=args.latency_time, spread=0.01)
    if args.table_from:
        saved = json.loads(Path(args.table_from).read_text())
        rows = [Row(**{**r, "ci95": tuple(r["ci95"]), "ms": tuple(r["ms"])}) for r in saved["rows"]]
        print(table(rows))
        print(verdicts(rows, saved.get("duels", {})))
        return 0
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.json"
    rows: list[Row] = []
    duels: dict[str, dict] = {}

    def save() -> None:
        results.write_text(json.dumps({"rows": [dataclasses.asdict(r) for r in rows], "duels": duels,
                                       "argv": sys.argv[1:]}, indent=1) + "\n")

    for mset in ModelSet.find(args.models):
        bench = Bench(mset, args.calib_samples, tuple(args.targets), tuple(args.depths), tuple(args.depth_targets),
                      tuple(args.latency_targets), measure,
                      LatencyOptions(threads=1, max_seconds=args.search_time), out, save=save)
        bench.rows = rows
        bench.run()
        base, width, depth = picks(rows)[mset.name]
        if width is not None and depth is not None:
            x, _ = mset.arrays("heldout")
            duels[mset.name] = head_to_head(width, depth, {mset.meta["input"]: x[:1]}, measure)
            save()
    print(table(rows))
    print()
    print(verdicts(rows, duels))
    print(f"\nlatency: onnxruntime CPU, 1 thread, interleaved with the original (median, 95% CI), "
          f"at most {args.latency_time:.0f} s per ratio; load: 1-minute load average before/after; "
          f"{os.cpu_count()} CPUs\nresults: {results}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
