"""Budgets: how many channels each group loses.

Three ways to share out the removal, all bounded by ``--max-ratio`` and
rounded to each group's width-grid step (``GroupBudget.step``, from
:mod:`onnxprune.widthgrid`; an explicit ``--round-to N`` replaces it for every group):

- uniform: every group loses the same fraction (``--ratio``);
- per pattern: groups matching a ``--ratio-for REGEX=R`` lose R instead;
- global: the lowest-scored channels across all groups go first, so groups
  with many weak channels lose more than groups with few.

(A fourth, ``--budget sensitivity``, shares it out by measured output error
per saved MAC instead of by scores: :mod:`onnxprune.sensitivity_budget`.)

Global ranking compares scores of different groups, so it needs them on one
scale: see :func:`normalize`, the one place that defines it. Which channels
of a group go is always its lowest-scored ones (the plan picks them); this
module only decides how many.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def normalize(scores) -> np.ndarray:
    """Scores on the scale used to rank channels across groups: divided by the group's mean.

    1.0 is an average channel of its group, 0.1 a channel a tenth as important.
    Every criterion's raw scores go through this before global ranking, so a
    criterion only has to rank channels within a group correctly (any
    positive scale); a group whose scores are all zero gets all zeros (its
    channels go first). Negative and non-finite scores count as zero.
    """
    values = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    values = np.maximum(values, 0.0)
    mean = values.mean() if values.size else 0.0
    return values / mean if mean > 0 else np.zeros_like(values)


def round_count(size: int, count: int, round_to: int = 1, divisors: bool = False) -> int:
    """At most ``count`` of ``size`` channels, keeping a multiple of round_to and at least one channel.

    With ``divisors`` (the width grid) a count below round_to may also keep a divisor of it (4, 2
    or 1 under a step of 8: blocked kernels take inputs narrower than their block whole).
    """
    keep = size - max(0, count)
    if round_to > 1:
        if keep < round_to and divisors:
            keep = min(d for d in range(max(1, keep), round_to + 1) if round_to % d == 0)
        elif size <= round_to:
            return 0
        else:
            keep = min(size, max(round_to, math.ceil(keep / round_to) * round_to))
    return max(0, min(size - 1, size - keep))


def n_to_remove(size: int, ratio: float, round_to: int = 1) -> int:
    """How many of ``size`` channels go: ratio of them, keeping a multiple of round_to, >= 1 kept."""
    return round_count(size, math.floor(size * ratio + 1e-9), round_to)


@dataclass(frozen=True)
class GroupBudget:
    """One group as the allocation sees it.

    ``original_size`` and ``removed_before`` carry the history of iterative
    pruning (``--steps``): ratios and caps count against the group as it was
    before the first step.
    """

    group: int  # id in the current dependency graph
    size: int  # channels now
    scores: np.ndarray  # normalized (see normalize), one per channel
    fixed_ratio: float | None = None  # from --ratio-for; None: follows the uniform/global level
    original_size: int | None = None
    removed_before: int = 0
    step: int = 1  # kept channel counts stay multiples of this (the width grid); 1: any

    @property
    def size0(self) -> int:
        return self.size if self.original_size is None else self.original_size


def _cumulative(b: GroupBudget, ratio: float, round_to: int | None, max_ratio: float) -> int:
    """Channels to remove now so that ``ratio`` of the original group is gone in total (capped)."""
    wanted = min(math.floor(b.size0 * ratio + 1e-9), _cap(b, max_ratio))
    return _rounded(b, wanted - b.removed_before, round_to)


def _rounded(b: GroupBudget, count: int, round_to: int | None) -> int:
    """``count`` rounded on the group's grid step, or on an explicit ``round_to``."""
    if round_to is None:
        return round_count(b.size, count, b.step, divisors=True)
    return round_count(b.size, count, round_to)


def _cap(b: GroupBudget, max_ratio: float) -> int:
    return math.floor(b.size0 * max_ratio + 1e-9)


def allocate(budgets: list[GroupBudget], level: float, *, global_rank: bool = False, max_ratio: float = 1.0,
             round_to: int | None = None) -> dict[int, int]:
    """Channels each group loses now, by group id.

    ``level`` is the uniform ratio, or with ``global_rank`` the fraction of all
    (not fixed) channels to remove, lowest normalized score first. Groups with
    a ``fixed_ratio`` take it whatever the level. No group loses more than
    ``max_ratio`` of its original channels, and at least one channel stays.
    Kept counts are multiples of each group's ``step``, or of ``round_to`` when given.
    """
    counts = {}
    ranked = []
    for b in budgets:
        if b.fixed_ratio is not None:
            counts[b.group] = _cumulative(b, b.fixed_ratio, round_to, max_ratio)
        elif not global_rank:
            counts[b.group] = _cumulative(b, level, round_to, max_ratio)
        else:
            ranked.append(b)
    if ranked:
        counts.update(_global_counts(ranked, level, max_ratio, round_to))
    return {g: n for g, n in counts.items() if n > 0}


def _global_counts(budgets: list[GroupBudget], level: float, max_ratio: float, round_to: int | None
                   ) -> dict[int, int]:
    """Take channels in order of normalized score until ``level`` of the original channels are gone.

    Caps and rounding can refuse channels; the rank threshold then moves on, so
    the total still reaches the level where the caps allow it.
    """
    total0 = sum(b.size0 for b in budgets)
    wanted = math.floor(total0 * level + 1e-9) - sum(b.removed_before for b in budgets)
    if wanted <= 0:
        return {}
    owner = np.concatenate([np.full(b.size, k) for k, b in enumerate(budgets)])
    scores = np.concatenate([b.scores for b in budgets])
    order = owner[np.lexsort((np.arange(len(scores)), scores))]  # group of each channel, by rank
    caps = np.array([max(0, _cap(b, max_ratio) - b.removed_before) for b in budgets])

    def counts_at(rank: int) -> np.ndarray:
        taken = np.minimum(np.bincount(order[:rank], minlength=len(budgets)), caps)
        return np.array([_rounded(b, int(n), round_to) for b, n in zip(budgets, taken)])

    lo, hi = 0, len(order)  # smallest rank whose counts reach `wanted` (or all channels if none does)
    while lo < hi:
        mid = (lo + hi) // 2
        if counts_at(mid).sum() >= wanted:
            hi = mid
        else:
            lo = mid + 1
    return {b.group: int(n) for b, n in zip(budgets, counts_at(lo))}
