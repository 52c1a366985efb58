"""Sensitivity analysis: prune one unit (a group, or a block of groups) alone at a few
ratios and measure how far the outputs move, so users can choose per-layer ratios.

A *unit* is the set of prunable groups rooted at one node (``--blocks 0``), or
at nodes whose names share their first N ``/``-separated parts (``--blocks N``:
``/layer1/layer1.0/conv1/Conv`` belongs to block ``/layer1/layer1.0`` for
N=2). Each unit carries a ``--ratio-for`` pattern that matches exactly its
groups, so :meth:`Sensitivity.suggest` can turn the measurements into prune
options for a given error budget.

The error of a measurement is ``1 - cosine`` (cosine similarity of each
sample's outputs to the original's, averaged over samples, worst output);
max |error|, relative L2 and top-1 agreement are recorded too.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from .budget import GroupBudget, allocate
from .calibration import CalibrationSet
from .depgraph import DependencyGraph, Group
from .errors import InputError, NothingToPrune, OptionError
from .activations import stream
from .fidelity import Fidelity, AgreementAccumulator
from .metrics import count_macs, count_params
from .options import PruneOptions
from .ir import Graph
from .plan import Plan, group_budgets, plan_for_counts
from .rewrite import apply_plan
from .widthgrid import WidthGrid

DEFAULT_RATIOS = (0.25, 0.5, 0.75)
ERRORS = ("cosine", "rel_l2", "top1")  # what an error budget can be measured in


@dataclass
class Point:
    """One unit pruned alone at one ratio."""

    ratio: float
    removed: int  # channels removed (over the unit's groups)
    cosine: float
    max_abs: float
    rel_l2: float
    top1: float | None
    macs_ratio: float  # MACs of the whole model after this prune / before
    params_ratio: float = 1.0  # ... parameters (1.0 in reports written before it was recorded)

    def error(self, by: str = "cosine") -> float:
        """0 for identical outputs, growing as they move apart (top1: 1 - agreement)."""
        if by == "cosine":
            return 1.0 - self.cosine
        if by == "rel_l2":
            return self.rel_l2
        return 1.0 - self.top1 if self.top1 is not None else 1.0 - self.cosine


@dataclass
class Unit:
    name: str  # the root node, or the block prefix
    pattern: str  # a --ratio-for / --ignore regex matching exactly this unit's groups
    groups: list[int]
    channels: int
    points: list[Point] = field(default_factory=list)


@dataclass
class Sensitivity:
    units: list[Unit]
    ratios: list[float]
    criterion: str
    data: str
    samples: int

    # ------------------------------------------------------------ choosing ratios
    def suggest(self, max_error: float, by: str = "cosine") -> list[tuple[str, float]]:
        """Per unit, the largest measured ratio whose error stays within ``max_error`` (0 if none does),
        as (pattern, ratio) pairs for ``--ratio-for``. Errors were measured one unit at a time: pruning
        several units together adds their errors up (roughly), so budget per layer accordingly."""
        if by not in ERRORS:
            raise InputError(f"unknown error measure '{by}' (choose from {', '.join(ERRORS)})")
        out = []
        for unit in self.units:
            fine = [p.ratio for p in unit.points if p.removed and p.error(by) <= max_error]
            out.append((unit.pattern, max(fine, default=0.0)))
        return out

    def check_suggests(self, max_error: float, by: str, option: str) -> None:
        """Raise NothingToPrune when no unit may lose anything within ``max_error``: the suggestion would
        prune nothing (say so, with the smallest error measured, rather than suggest all zeros)."""
        if any(ratio > 0 for _, ratio in self.suggest(max_error, by)):
            return
        measured = [(p.error(by), p.ratio, u.name) for u in self.units for p in u.points if p.removed]
        least = f"; the smallest measured is {min(measured)[0]:.3g} ({min(measured)[2]} at ratio " \
                f"{min(measured)[1]:g})" if measured else ""
        raise NothingToPrune(f"{option}: no unit stays within a {by} error of {max_error:g} at any measured ratio"
                             f"{least}: allow a larger error, or measure smaller --ratios")

    def ratio_for_options(self, max_error: float, by: str = "cosine") -> list[str]:
        """The suggestion as command-line words: ``--ratio-for PATTERN=R`` for every unit."""
        words = []
        for pattern, ratio in self.suggest(max_error, by):
            words += ["--ratio-for", f"{pattern}={ratio:g}"]
        return words

    # ------------------------------------------------------------ output
    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @staticmethod
    def from_json(text: str, source: str = "sensitivity report") -> "Sensitivity":
        try:
            data = json.loads(text)
            units = [Unit(**{**u, "points": [Point(**p) for p in u["points"]]}) for u in data["units"]]
            return Sensitivity(units, list(data["ratios"]), data["criterion"], data["data"], data["samples"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{source}: not a sensitivity report written by onnxprune sensitivity ({exc})") \
                from None

    def table(self, by: str = "cosine") -> str:
        """One row per unit, most sensitive (largest error at the largest ratio) first."""
        width = max([len(u.name) for u in self.units] + [4])
        head = f"{'unit':<{width}}  {'ch':>5}  " + "  ".join(f"{'r=' + format(r, 'g'):>15}" for r in self.ratios)
        lines = [head, f"{'':<{width}}  {'':>5}  " + "  ".join(f"{'1-cos / MACs':>15}" for _ in self.ratios)]
        for unit in sorted(self.units, key=lambda u: -max((p.error(by) for p in u.points), default=0.0)):
            cells = []
            for ratio in self.ratios:
                point = next((p for p in unit.points if p.ratio == ratio), None)
                cells.append(f"{'-':>15}" if point is None or not point.removed else
                             f"{point.error('cosine'):>8.2e} x{point.macs_ratio:.2f}")
            lines.append(f"{unit.name:<{width}}  {unit.channels:>5}  " + "  ".join(cells))
        return "\n".join(lines)

    def plot(self, path: str, by: str = "cosine", top: int = 12, fmt: str | None = None) -> None:
        """Error against ratio, one line per unit (the ``top`` most sensitive labelled), in the format
        ``fmt`` (default: the path's extension; see :func:`check_plot`)."""
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

        ranked = sorted(self.units, key=lambda u: -max((p.error(by) for p in u.points), default=0.0))
        fig = Figure(figsize=(8, 5))
        ax = fig.subplots()
        for k, unit in enumerate(ranked):
            points = [p for p in unit.points if p.removed]
            if not points:
                continue
            ax.plot([p.ratio for p in points], [max(p.error(by), 1e-12) for p in points], marker="o",
                    linewidth=1.5 if k < top else 0.6, alpha=1.0 if k < top else 0.35,
                    label=unit.name if k < top else None)
        ax.set_yscale("log")
        ax.set_xlabel("fraction of the unit's channels removed")
        ax.set_ylabel({"cosine": "1 - cosine similarity", "rel_l2": "relative L2 error",
                       "top1": "1 - top-1 agreement"}[by])
        ax.set_title(f"Sensitivity ({self.criterion}, {self.samples} samples: {self.data})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if any(line.get_label() and not line.get_label().startswith("_") for line in ax.get_lines()):
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        fig.savefig(path, dpi=110, format=fmt or plot_format(path))


def plot_format(path: str) -> str:
    """The image format a plot path names by its extension (png, svg, pdf, jpg...)."""
    return Path(path).suffix[1:].lower()


def check_plot(path: str) -> None:
    """Fail before any work when ``--plot`` cannot be written: matplotlib is an optional extra, and the
    extension names the format (never PNG bytes under a .jpg name)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise OptionError("--plot needs matplotlib, which is not installed: pip install 'onnxprune[plot]'") from None
    formats = Figure().canvas.get_supported_filetypes()
    if plot_format(path) not in formats:
        named = f"'{Path(path).suffix}' is no image format matplotlib writes" if Path(path).suffix else \
            "no extension to name the image format"
        raise OptionError(f"--plot {path}: {named} (use one of {', '.join('.' + f for f in sorted(formats))})")


# ---------------------------------------------------------------- measuring
def units_of(dg: DependencyGraph, blocks: int = 0) -> list[Unit]:
    """Prunable groups gathered by root node (blocks=0) or by the first ``blocks`` parts of its name."""
    by_name: dict[str, list[Group]] = {}
    for group in dg.prunable_groups():
        node = group.root.node if group.root is not None else str(group.id)
        by_name.setdefault(_block(node, blocks), []).append(group)
    units = []
    for name, groups in by_name.items():
        roots = sorted({g.root.node for g in groups})
        pattern = "^(?:" + "|".join(re.escape(r) for r in roots) + ")$"
        matched = {g.id for g in dg.groups_matching(pattern) if g.prunable}
        ids = sorted(matched | {g.id for g in groups})  # a root may also feed other groups: they come along
        units.append(Unit(name, pattern, ids, 0))
    units = _merge_overlaps(units)
    for unit in units:
        unit.channels = sum(dg.groups[g].size for g in unit.groups)
    return units


def _block(node: str, depth: int) -> str:
    if depth <= 0:
        return node
    parts = node.split("/")
    keep = depth + 1 if node.startswith("/") else depth
    return "/".join(parts[:keep]) if len(parts) > keep else node


def _merge_overlaps(units: list[Unit]) -> list[Unit]:
    """Units whose patterns reach the same groups become one, so every group is in exactly one unit."""
    merged: list[Unit] = []
    for unit in units:
        for other in merged:
            if set(other.groups) & set(unit.groups):
                other.name = f"{other.name}+{unit.name}"
                other.pattern = f"{other.pattern}|{unit.pattern}"
                other.groups = sorted(set(other.groups) | set(unit.groups))
                break
        else:
            merged.append(unit)
    return merged


def _removed(budget: GroupBudget, ratio: float, round_to: int | None) -> int:
    """Channels of the group that go at ``ratio``, rounded as budgets round them (the width grid)."""
    alone = replace(budget, fixed_ratio=None, original_size=None, removed_before=0)
    return allocate([alone], ratio, round_to=round_to).get(budget.group, 0)


def analyze(dg: DependencyGraph, original_graph, data: CalibrationSet, *, ratios=DEFAULT_RATIOS,
            options: PruneOptions | None = None, blocks: int = 0, provider: str = "cpu",
            to_model_graph: Callable = lambda g: g, progress: Callable[[Iterable], Iterable] | None = None,
            grid: WidthGrid | None = None, only: set[int] | None = None,
            refit: Callable[[Plan, Graph], Graph] | None = None) -> Sensitivity:
    """Prune every unit alone at every ratio (lowest-scored channels by ``options.criterion``) and measure
    the outputs against ``original_graph`` on ``data``. ``to_model_graph`` prepares a pruned graph
    for running (re-tying shared constants); ``grid``: the widths the ratios round to (default: the
    provider's default grid); ``only``: measure only units holding one of these group ids;
    ``refit(plan, pruned)``: a recovery to run on each pruned graph before it is measured."""
    options = (options or PruneOptions()).check()
    ratios = sorted(set(float(r) for r in ratios))
    budgets, _ = group_budgets(dg, options.with_(ignore=()), data=data, provider=provider, grid=grid)
    by_id = {b.group: b for b in budgets}
    units = [u for u in units_of(dg, blocks) if only is None or set(u.groups) & only]
    macs0 = count_macs(dg.graph, dg.registry)
    params0 = count_params(to_model_graph(dg.graph), dg.registry)
    names = [v.name for v in original_graph.outputs]
    reference = [{n: batch[n] for n in names} for batch in stream(original_graph, [], data, provider)]  # run once
    jobs = [(unit, ratio) for unit in units for ratio in ratios]
    for unit, ratio in (progress(jobs) if progress is not None else jobs):
        counts = {g: _removed(by_id[g], ratio, options.round_to) for g in unit.groups}
        plan = plan_for_counts(dg, budgets, options, counts, ratio)
        if not plan.removed_channels:
            unit.points.append(Point(ratio, 0, 1.0, 0.0, 0.0, None, 1.0))
            continue
        pruned = apply_plan(dg, plan)
        macs, params = count_macs(pruned, dg.registry), count_params(to_model_graph(pruned), dg.registry)
        if refit is not None:
            pruned = refit(plan, pruned)
        fidelity = _compare(reference, to_model_graph(pruned), data, provider)
        unit.points.append(Point(ratio, plan.removed_channels, fidelity.cosine, fidelity.max_abs,
                                 max(o.rel_l2 for o in fidelity.outputs), fidelity.top1,
                                 macs / macs0 if macs0 else 1.0, params / params0 if params0 else 1.0))
    return Sensitivity(units, ratios, options.criterion, data.source, data.n_samples)


def _compare(reference: list[dict], pruned, data: CalibrationSet, provider: str) -> Fidelity:
    """fidelity.measure with the original's outputs computed once for all units and ratios."""
    accs = {name: AgreementAccumulator(name) for name in reference[0]} if reference else {}
    for ref, got in zip(reference, stream(pruned, [], data, provider)):
        for name, acc in accs.items():
            acc.update(ref[name], got[name])
    return Fidelity([acc.result() for acc in accs.values()], data.n_samples, data.source)
