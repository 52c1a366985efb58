#!/usr/bin/env python
"""Accuracy benchmark: task accuracy and output fidelity of pruned models vs MACs ratio.

For each model set (``models/digits/`` always; ``models/extra/*/`` when
``scripts/fetch_models.py`` has fetched them), each criterion in
``onnxprune.importance.CRITERIA`` (read at run time, so new criteria show up by
themselves) and each recovery variant the API offers (``none`` always;
``recover`` once ``Pruner.recover`` exists), prune to MACs ratios 0.7, 0.5, 0.3
and measure, on the set's held-out labelled split: task accuracy (top-1, or
character accuracy for a text recogniser: ``scripts/task_metrics.py``), and
fidelity to the unpruned model (mean cosine, top-1 agreement, on the first 64
held-out samples). Prints a table next to
the unpruned accuracy and the time recovery takes, writes JSON and a plot.

Only the public Python API is used (``Pruner``, ``PruneOptions``), so the
benchmark keeps working as features land. The MACs target is reached with
``PruneOptions(target_macs=...)`` when the planner honours it (within 2%), else
by searching the uniform ``ratio`` here; the table says which.

    python scripts/bench_accuracy.py                 # every model set found, full table + plot
    python scripts/bench_accuracy.py --quick         # smoke test: digits, MACs 0.5, a few seconds
    python scripts/bench_accuracy.py --models orientation --targets 0.5 0.3
    python scripts/bench_accuracy.py --targets 0.5 --budgets uniform global sensitivity   # budgets side by side

Needs matplotlib for the plot (``--no-plot`` without it); tqdm for a progress bar if installed.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from onnxprune import Pruner, PruneOptions
from onnxprune.importance import CRITERIA
from onnxprune.options import BudgetMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import task_metrics  # noqa: E402  (a sibling script module)

# accuracy against MACs at exact widths, as the README figures were measured (widths on the
# provider's grid, for latency: scripts/bench_latency_cnn.py)
EXACT = dict(round_to=1, never_slower=False)

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (0.7, 0.5, 0.3)
TARGET_TOLERANCE = 0.02  # the "within 2%"
FIDELITY_SAMPLES = 64  # held-out samples for output fidelity (accuracy uses them all)


# ---------------------------------------------------------------- model sets

@dataclass
class ModelSet:
    """A model with labelled data, in the layout of models/digits/ (see models/README.md)."""

    name: str
    folder: Path
    meta: dict

    @classmethod
    def find(cls, names: list[str] | None = None) -> list["ModelSet"]:
        candidates = [ROOT / "models" / "digits"] + sorted(p for p in (ROOT / "models" / "extra").glob("*")
                                                            if p.is_dir())
        found = []
        for folder in candidates:
            for meta_file in sorted(folder.glob("*.json")):
                meta = json.loads(meta_file.read_text())
                if {"model", "input", "heldout"} <= set(meta) and (folder / meta["model"]).exists():
                    found.append(cls(meta_file.stem, folder, meta))
        if names:
            missing = set(names) - {s.name for s in found}
            if missing:
                raise SystemExit(f"bench_accuracy: no model set {', '.join(sorted(missing))} "
                                 f"(found: {', '.join(s.name for s in found)}; run scripts/fetch_models.py)")
            found = [s for s in found if s.name in names]
        return found

    @property
    def model_path(self) -> Path:
        return self.folder / self.meta["model"]

    @property
    def input_shapes(self) -> dict[str, list[int]] | None:
        shape = self.meta.get("input_shape")
        return {self.meta["input"]: shape} if shape else None

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.folder / f"{split}.npz") as x, np.load(self.folder / "labels.npz") as y:
            return x[self.meta["input"]], y[split]

    def accuracy(self, model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
        """Task accuracy by the set's metric (top-1 unless its JSON names another, see task_metrics)."""
        return task_metrics.accuracy(model_bytes, self.meta["input"], x, y, self.meta.get("metric", "top1"))


# ---------------------------------------------------------------- recovery variants
# name -> function(pruner, calibration set) that recovers accuracy in place; one line per variant.

Recovery = Callable[[Pruner, object], None]


def recovery_variants() -> dict[str, Recovery | None]:
    variants: dict[str, Recovery | None] = {"none": None}
    if hasattr(Pruner, "recover"):
        variants["recover"] = lambda pruner, calib: pruner.recover(calib)
        # least squares' rows all weighing the same (RecoveryOptions.weighting; default: padding and
        # the sequence output's majority class, CTC's blank, weighed down)
        variants["recover-unweighted"] = lambda pruner, calib: pruner.recover(calib, weighting="none")
    return variants


# ---------------------------------------------------------------- reaching a MACs target

class RatioSearch:
    """The uniform ratio whose MACs ratio is closest to a target.

    MACs fall roughly as (1 - ratio)^2 (a conv loses inputs and outputs), so
    ``1 - sqrt(target)`` is the first guess, refined by bisection around it.
    Under a uniform ratio every criterion removes the same number of channels
    per group, so one search per (model, target) serves every criterion.
    """

    def __init__(self, fresh: Callable[[], Pruner], macs0: int):
        self.fresh, self.macs0, self.cache = fresh, macs0, {}

    def macs_ratio(self, ratio: float) -> float:
        ratio = round(ratio, 4)
        if ratio not in self.cache:
            pruner = self.fresh()
            pruner.prune(PruneOptions(ratio=ratio, criterion="l2", **EXACT))
            self.cache[ratio] = pruner.macs() / self.macs0
        return self.cache[ratio]

    def ratio_for(self, target: float, steps: int = 6, good_enough: float = 0.01) -> float:
        guess = round(min(0.95, max(0.0, 1 - target ** 0.5)), 4)
        best = guess
        lo, hi = max(0.0, guess - 0.15), min(0.95, guess + 0.15)
        mid = guess
        for _ in range(steps + 1):
            got = self.macs_ratio(mid)
            if abs(got - target) < abs(self.macs_ratio(best) - target):
                best = mid
            if abs(got - target) <= good_enough:
                break
            lo, hi = (mid, hi) if got > target else (lo, mid)
            mid = round((lo + hi) / 2, 4)
        return best


def api_honours_target() -> bool:
    return "target_macs" in {f.name for f in dataclasses.fields(PruneOptions)}


# ---------------------------------------------------------------- the benchmark

@dataclass
class Row:
    model: str
    criterion: str
    recovery: str
    target: float | None  # None: the unpruned model
    macs_ratio: float
    params_ratio: float
    accuracy: float
    cosine: float | None = None
    top1_agreement: float | None = None
    recover_s: float | None = None
    prune_s: float | None = None
    search: str = ""  # how the MACs target was reached: "api" (target_macs) or "ratio R" (searched here)
    error: str = ""
    budget: str = "uniform"  # how the target was shared out among the groups (PruneOptions.budget)


@dataclass
class Bench:
    sets: list[ModelSet]
    criteria: list[str]
    targets: tuple[float, ...]
    recoveries: dict[str, Recovery | None]
    fidelity_samples: int = FIDELITY_SAMPLES
    budgets: tuple[str, ...] = ("uniform",)
    results: Path | None = None  # rewritten after every row, so a long run that is stopped keeps what it measured
    rows: list[Row] = field(default_factory=list)
    api_target: bool = False
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)

    def run(self) -> list[Row]:
        jobs = len(self.sets) * len(self.criteria) * len(self.targets) * len(self.recoveries) * len(self.budgets)
        bar = _progress(jobs)
        for mset in self.sets:
            try:
                self._run_set(mset, bar)
            except Exception as exc:  # a set that fails to load or measure is recorded; the other sets still run
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self.log(f"{mset.name}: {error}")
                self.rows.append(Row(mset.name, "-", "-", None, float("nan"), float("nan"), float("nan"), error=error))
                self._save()
        bar.close()
        return self.rows

    def _run_set(self, mset: ModelSet, bar) -> None:
        source = mset.model_path.read_bytes()
        x, y = mset.arrays("heldout")
        base = Pruner.load(mset.model_path, input_shapes=mset.input_shapes)
        load = lambda: copy.deepcopy(base)  # noqa: E731  (far cheaper than loading and grouping again)
        macs0, params0 = base.macs(), base.params()
        calib = base.load_calibration(mset.folder / "calib.npz")
        heldout = base.load_calibration(mset.folder / "heldout.npz").take(self.fidelity_samples)
        self.rows.append(Row(mset.name, "-", "-", None, 1.0, 1.0, mset.accuracy(source, x, y)))
        search = RatioSearch(load, macs0)
        self.api_target = api_honours_target()  # until the planner misses a target once
        jobs = [(t, c, r, b) for t in self.targets for c in self.criteria for r in self.recoveries for b in self.budgets]
        for target, criterion, rec_name, budget in jobs:
            recover = self.recoveries[rec_name]
            bar.set_description(f"{mset.name} {criterion} {rec_name} {budget} MACs {target}")
            row = Row(mset.name, criterion, rec_name, target, float("nan"), float("nan"), float("nan"), budget=budget)
            try:
                self._prune_one(row, mset, load, search, calib, heldout, recover, macs0, params0, x, y)
            except Exception as exc:  # a failing criterion must not hide the others' results
                row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self.log(f"{mset.name} {criterion} {rec_name} {budget} MACs {target}: {row.error}")
            self.rows.append(row)
            self._save()
            bar.update(1)

    def _save(self) -> None:
        if self.results is not None:
            self.results.write_text(json.dumps([dataclasses.asdict(r) for r in self.rows], indent=1) + "\n")

    def _prune_one(self, row, mset, load, search, calib, heldout, recover, macs0, params0, x, y):
        start = time.perf_counter()
        pruner = load()
        row.search = ""
        if self.api_target or row.budget != "uniform":  # only the uniform ratio is searched here
            pruner.prune(PruneOptions(target_macs=row.target, criterion=row.criterion, budget=row.budget, **EXACT),
                         data=calib)
            if abs(pruner.macs() / macs0 - row.target) <= TARGET_TOLERANCE or row.budget != "uniform":
                row.search = "api"
            else:
                self.log(f"{row.model}: PruneOptions(target_macs={row.target}) gave MACs "
                         f"x{pruner.macs() / macs0:.3f}; searching the ratio here instead")
                self.api_target = False
                pruner = load()
        if not row.search:
            ratio = search.ratio_for(row.target)
            pruner.prune(PruneOptions(ratio=ratio, criterion=row.criterion, **EXACT), data=calib)
            row.search = f"ratio {ratio:.3f}"
        row.prune_s = time.perf_counter() - start
        if recover is not None:
            start = time.perf_counter()
            recover(pruner, calib)
            row.recover_s = time.perf_counter() - start
        row.macs_ratio, row.params_ratio = pruner.macs() / macs0, pruner.params() / params0
        row.accuracy = mset.accuracy(pruner.to_model().SerializeToString(), x, y)
        fidelity = pruner.fidelity(heldout)
        row.cosine, row.top1_agreement = fidelity.cosine, fidelity.top1


class _NoBar:
    def update(self, n): pass
    def set_description(self, text): pass
    def close(self): pass


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, file=sys.stderr, leave=False)


# ---------------------------------------------------------------- output

def _pct(value) -> str:
    return "   -  " if value is None or value != value else f"{100 * value:6.2f}"


def table(rows: list[Row]) -> str:
    lines = ["| model | criterion | recovery | target MACs | MACs | params | accuracy % | cosine | top-1 agree % "
             "| prune s | recover s | how | budget |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.target is None and r.error:
            lines.append(f"| {r.model} | failed: {r.error} ||||||||||||")
            continue
        if r.target is None:
            lines.append(f"| {r.model} | unpruned | - | 1.0 | x1.000 | x1.000 | {_pct(r.accuracy)} | 1.0000 | 100.00 "
                         f"| - | - | - | - |")
            continue
        if r.error:
            lines.append(f"| {r.model} | {r.criterion} | {r.recovery} | {r.target} | failed: {r.error} ||||||||| ")
            continue
        cosine = "-" if r.cosine is None else f"{r.cosine:.4f}"
        recover = "-" if r.recover_s is None else f"{r.recover_s:.2f}"
        lines.append(f"| {r.model} | {r.criterion} | {r.recovery} | {r.target} | x{r.macs_ratio:.3f} "
                     f"| x{r.params_ratio:.3f} | {_pct(r.accuracy)} | {cosine} | {_pct(r.top1_agreement)} "
                     f"| {r.prune_s:.2f} | {recover} | {r.search} | {r.budget} |")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if not (r.target is None and r.error)]  # sets that failed have no curve
    models = list(dict.fromkeys(r.model for r in rows))
    criteria = list(dict.fromkeys(r.criterion for r in rows if r.target is not None))
    palette = plt.get_cmap("tab10" if len(criteria) <= 10 else "tab20")
    colour = {c: palette(i % palette.N) for i, c in enumerate(criteria)}  # a colour per criterion, a style per recovery
    styles = ["-", "--", ":", "-."]
    recoveries = list(dict.fromkeys(r.recovery for r in rows if r.target is not None))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r.model == model]
        base = next(r for r in mine if r.target is None)
        ax.axhline(100 * base.accuracy, color="black", lw=1, ls=":", label="unpruned")
        curves = dict.fromkeys((r.criterion, r.recovery, r.budget) for r in mine if r.target is not None)
        for criterion, recovery, budget in curves:
            pts = sorted((r.macs_ratio, 100 * r.accuracy) for r in mine
                         if (r.criterion, r.recovery, r.budget) == (criterion, recovery, budget) and not r.error)
            if pts:
                label = criterion if recovery == "none" else f"{criterion} + {recovery}"
                ax.plot(*zip(*pts), marker="o" if budget == "uniform" else "s", color=colour[criterion],
                        ls=styles[recoveries.index(recovery) % len(styles)],
                        label=label if budget == "uniform" else f"{label} ({budget})")
        ax.set_title(f"{model} (unpruned {100 * base.accuracy:.1f}%)")
        ax.set_xlabel("MACs ratio (pruned / original)")
        ax.set_ylabel("held-out accuracy %")
        ax.set_xlim(1.02, 0.2)
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="model sets by name (default: all found)")
    ap.add_argument("--criteria", nargs="*", help=f"default: every criterion ({', '.join(CRITERIA)})")
    ap.add_argument("--targets", nargs="*", type=float, default=list(TARGETS), help="MACs ratios")
    ap.add_argument("--no-recovery", action="store_true", help="only the 'none' recovery variant")
    ap.add_argument("--recoveries", nargs="*", help="recovery variants by name (default: none, recover; "
                                                    "recover-unweighted: least squares without row weights)")
    ap.add_argument("--budgets", nargs="*", default=["uniform"], choices=[m.value for m in BudgetMode],
                    help="how the target is shared out (PruneOptions.budget; sensitivity measures on calib.npz)")
    ap.add_argument("--quick", action="store_true", help="smoke test: digits only, MACs 0.5")
    ap.add_argument("--out-dir", default=str(ROOT / "out" / "bench_accuracy"))
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--table-from", metavar="RESULTS.json", help="print the table (and plot) of an earlier run")
    ap.add_argument("--fidelity-samples", type=int, default=FIDELITY_SAMPLES,
                    help="held-out samples for output fidelity (accuracy uses every one)")
    args = ap.parse_args(argv)
    if args.table_from:
        rows = [Row(**r) for r in json.loads(Path(args.table_from).read_text())]
        print(table(rows))
        if not args.no_plot:
            plot(rows, Path(args.table_from).with_suffix(".png"))
        return 0
    if args.quick:
        args.models, args.targets = args.models or ["digits"], [0.5]
    criteria = args.criteria or list(CRITERIA)
    unknown = set(criteria) - set(CRITERIA)
    if unknown:
        ap.error(f"unknown criteria {', '.join(sorted(unknown))} (known: {', '.join(CRITERIA)})")
    recoveries = recovery_variants()
    if args.recoveries:
        unknown = set(args.recoveries) - set(recoveries)
        if unknown:
            ap.error(f"unknown recovery variants {', '.join(sorted(unknown))} (known: {', '.join(recoveries)})")
        recoveries = {name: recoveries[name] for name in args.recoveries}
    else:
        recoveries.pop("recover-unweighted", None)
    if args.no_recovery:
        recoveries = {"none": None}

    sets = ModelSet.find(args.models)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = Bench(sets, criteria, tuple(args.targets), recoveries, args.fidelity_samples, tuple(args.budgets),
                 out / "results.json").run()
    print(table(rows))
    print(f"\nrecovery variants: {', '.join(recoveries)}; criteria: {', '.join(criteria)}; "
          f"target MACs via {'PruneOptions.target_macs when it lands within 2%, else ' if api_honours_target() else ''}"
          f"a uniform-ratio search")
    print(f"results: {out / 'results.json'}")
    if not args.no_plot:
        plot(rows, out / "accuracy_vs_macs.png")
        print(f"plot: {out / 'accuracy_vs_macs.png'}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
