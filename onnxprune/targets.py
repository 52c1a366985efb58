"""Size targets: find the budget level that leaves a given fraction of MACs, params or latency.

The level is the uniform ratio (or, with ``--global`` and ``--budget
sensitivity``, the fraction of all channels); ``--ratio-for`` groups keep
their fixed ratios. Each candidate plan
is applied and measured for real (MACs and params counted on the rewritten
graph, latency timed with onnxruntime), and the level is bisected: plans only
change at a finite set of levels, so the search ends at two neighbouring
plans around the target. Where many groups change at the same level (equal
sizes under a uniform ratio), the groups between the two plans take their
next step one by one, least important channels first, again bisected; the
plan closest to the target wins.

A model with subgraphs (If branches, Loop and Scan bodies) is measured with them pruned
at the same level (``subgraphs``: level -> the planner that prunes them, see bodies.py),
so the fraction reached counts the MACs inside them; the result carries that planner.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from .calibration import CalibrationSet
from .depgraph import DependencyGraph
from .errors import PlanError
from .ir import Graph
from .options import PruneOptions
from .plan import Plan, allocator, group_budgets, plan_for_counts
from .rewrite import apply_plan
from .widthgrid import WidthGrid

if TYPE_CHECKING:
    from .bodies import Planner
    from .depthwidth import DepthWidthSearch
    from .sensitivity import Sensitivity
    from .speed import SpeedCheck

TOLERANCE = 0.02  # a target is met when the reached fraction is within this of it (of the original)
LEVEL_RESOLUTION = 1e-6  # bisection stops when the bracketing levels are this close
CLOSE_ENOUGH = 0.001  # ... or when a plan lands this close to the target (MACs/params)

Fraction = Callable[[Graph], float]  # a pruned graph -> its metric as a fraction of the original


@dataclass(frozen=True)
class SearchResult:
    plan: Plan
    metric: str  # macs, params or latency
    target: float  # fraction of the original asked for
    reached: float  # fraction of the original the plan leaves
    level: float  # the uniform ratio or global fraction found
    evaluations: int  # plans applied and measured
    seconds: float
    grid: str = ""  # the widths it kept to (WidthGrid.describe, or the --round-to multiple)
    speed: "SpeedCheck | None" = None  # the plan's latency against the original's (see speed.never_slower)
    depth_width: "DepthWidthSearch | None" = None  # --target-latency: the depths tried with width (depthwidth.py)
    # how the subgraphs were pruned at the plan's level, counted in ``reached`` (None: no subgraphs)
    subgraphs: "Planner | None" = None

    @property
    def met(self) -> bool:
        return abs(self.reached - self.target) <= TOLERANCE

    def to_dict(self) -> dict:
        data = {"metric": self.metric, "target": self.target, "reached": self.reached, "level": self.level,
                "evaluations": self.evaluations, "seconds": self.seconds, "within_tolerance": self.met,
                "widths": self.grid}
        if self.speed is not None:
            data["latency_check"] = self.speed.to_dict()
        if self.depth_width is not None:
            data["depth_width"] = self.depth_width.to_dict()
        return data


def search(dg: DependencyGraph, options: PruneOptions, metric: str, target: float, fraction: Fraction,
           history: dict[int, tuple[int, int]] | None = None, data: CalibrationSet | None = None,
           provider: str = "cpu", max_evaluations: int = 40, close_enough: float = CLOSE_ENOUGH,
           grid: WidthGrid | None = None, sensitivity: "Sensitivity | None" = None,
           subgraphs: "Callable[[float], Planner] | None" = None) -> SearchResult:
    """The plan whose measured ``fraction`` is closest to ``target`` (bisection over the level).

    ``sensitivity``: the measurements a sensitivity budget (``--budget sensitivity``) allocates by.
    ``subgraphs``: level -> how to prune inside subgraphs at it; each candidate is measured with them
    pruned so.

    Raises PlanError when even the largest level leaves more than the target
    (blocked or protected groups hold the rest) or the fixed ratios alone
    already remove more.
    """
    start = time.perf_counter()
    budgets, skipped = group_budgets(dg, options, history, data, provider, grid)  # scored once
    allocation = allocator(budgets, options, sensitivity, metric)
    measured: dict[tuple, float] = {}

    def evaluate(level: float, counts: dict[int, int] | None = None) -> tuple[Plan, float]:
        counts = allocation(level) if counts is None else counts
        plan = plan_for_counts(dg, budgets, options, counts, level, skipped)
        key = tuple((d.group, d.removed) for d in plan.decisions)
        if subgraphs is None:
            if key not in measured:
                measured[key] = fraction(apply_plan(dg, plan))
            return plan, measured[key]
        from .bodies import prune_inside  # late: bodies imports the planner
        graph, inside = prune_inside(apply_plan(dg, plan), dg.registry, subgraphs(level))
        if (key, inside) not in measured:
            measured[(key, inside)] = fraction(graph)
        return plan, measured[(key, inside)]

    flag = f"--target-{metric} {target:g}"
    lo, hi = 0.0, 1.0 - 1e-9
    lo_plan, lo_value = evaluate(lo)
    hi_plan, hi_value = evaluate(hi)
    if hi_value > target + TOLERANCE:
        raise PlanError(f"{flag} is out of reach: pruning every group as far as the options allow leaves "
                        f"x{hi_value:.3f} (protected, blocked and capped groups keep the rest)")
    if lo_value < target - TOLERANCE:
        raise PlanError(f"{flag} is out of reach: the fixed --ratio-for groups alone leave x{lo_value:.3f}")
    if lo_value <= target:
        hi, hi_plan, hi_value = lo, lo_plan, lo_value

    def done() -> bool:
        return min(abs(lo_value - target), abs(hi_value - target)) <= close_enough or len(measured) >= max_evaluations

    while hi - lo > LEVEL_RESOLUTION and not done():
        mid = (lo + hi) / 2
        plan, value = evaluate(mid)
        if value > target:
            lo, lo_plan, lo_value = mid, plan, value
        else:
            hi, hi_plan, hi_value = mid, plan, value
    best = min(((lo_value, lo_plan), (hi_value, hi_plan)), key=lambda c: abs(c[0] - target))
    if not done():
        best = min(best, _between(evaluate, allocation, budgets, lo, hi, target), key=lambda c: abs(c[0] - target))
    value, plan = best
    widths = f"multiples of {options.round_to}" if options.round_to is not None else (
        grid.describe() if grid is not None else "default grid")
    return SearchResult(plan, metric, target, value, plan.ratio, len(measured), time.perf_counter() - start, widths,
                        subgraphs=subgraphs(plan.ratio) if subgraphs is not None else None)


def _between(evaluate, allocation, budgets, lo: float, hi: float, target: float) -> tuple[float, Plan]:
    """Between two neighbouring levels, let the groups that differ take their step one at a time
    (the step removing the least important channels first) and bisect over how many do."""
    low, high = allocation(lo), allocation(hi)
    by_id = {b.group: b for b in budgets}

    def step_importance(g: int) -> float:
        scores = np.sort(by_id[g].scores)
        return float(scores[low.get(g, 0):high.get(g, 0)].mean())
    changing = sorted((g for g in high if high[g] != low.get(g, 0)), key=step_importance)

    def with_first(n: int) -> tuple[float, Plan]:
        counts = dict(low)
        counts.update((g, high[g]) for g in changing[:n])
        plan, value = evaluate(lo, counts)
        return value, plan
    a, b = 0, len(changing)  # with_first(a) is above the target, with_first(b) at or below it
    candidates = [with_first(a), with_first(b)]
    while b - a > 1:
        mid = (a + b) // 2
        candidate = with_first(mid)
        candidates.append(candidate)
        if candidate[0] > target:
            a = mid
        else:
            b = mid
    return min(candidates, key=lambda c: abs(c[0] - target))
