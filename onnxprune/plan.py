"""Choosing what to remove: an immutable, JSON-serialisable pruning plan."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from .budget import GroupBudget, allocate, normalize
from .calibration import CalibrationSet
from .depgraph import DependencyGraph
from .errors import PlanError
from .importance import CRITERIA
from .options import BudgetMode, PruneOptions
from .scoring import ScoringContext
from .widthgrid import WidthGrid, default_grid, group_steps

if TYPE_CHECKING:
    from .sensitivity import Sensitivity


@dataclass(frozen=True)
class GroupDecision:
    group: int
    root: str
    size: int
    removed: tuple[int, ...]  # group channel indices
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    decisions: tuple[GroupDecision, ...]
    criterion: str = "l2"
    ratio: float = 0.0
    skipped: tuple[str, ...] = field(default_factory=tuple)

    @property
    def removed_channels(self) -> int:
        return sum(len(d.removed) for d in self.decisions)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @staticmethod
    def from_json(text: str) -> "Plan":
        data = json.loads(text)
        decisions = tuple(GroupDecision(**{**d, "removed": tuple(d["removed"])}) for d in data["decisions"])
        return Plan(decisions, data.get("criterion", ""), data.get("ratio", 0.0), tuple(data.get("skipped", ())))


def make_plan(dg: DependencyGraph, options: PruneOptions | None = None, *, level: float | None = None,
              history: dict[int, tuple[int, int]] | None = None, data: CalibrationSet | None = None,
              provider: str = "cpu", grid: WidthGrid | None = None, sensitivity: "Sensitivity | None" = None,
              **kwargs) -> Plan:
    """Score every prunable group and choose its channels to remove (``kwargs``: PruneOptions fields).

    ``level`` replaces ``options.ratio`` (the uniform ratio, or the global
    fraction with ``global_rank``): the target searches vary it. ``history``
    maps a group id to (original size, channels removed in earlier steps).
    ``data`` is the calibration data data-driven criteria need (their
    statistics are collected for every group in one pass, before any scoring).
    ``grid``: the widths that run fast (default: the provider's default grid). ``sensitivity``: the
    measurements a sensitivity budget allocates by (its level is then the fraction of all channels).
    """
    options = (options or PruneOptions()).with_(**kwargs).check()
    budgets, skipped = group_budgets(dg, options, history, data, provider, grid)
    level = options.ratio if level is None else level
    counts = allocator(budgets, options, sensitivity)(level)
    return plan_for_counts(dg, budgets, options, counts, level, skipped)


_KIND_SWITCH = {"hidden": "size not pruned (normalization statistics span it; use --prune-hidden)",
                "heads": "not pruned (--no-prune-heads)", "channels": "not pruned (--no-prune-channels)",
                "head_dim": "not pruned (--prune-head-dim)"}


def group_budgets(dg: DependencyGraph, options: PruneOptions, history: dict[int, tuple[int, int]] | None = None,
                  data: CalibrationSet | None = None, provider: str = "cpu", grid: WidthGrid | None = None
                  ) -> tuple[list[GroupBudget], tuple[str, ...]]:
    """Normalized scores, fixed ratios and width-grid steps of every group the options let us prune;
    why others are skipped."""
    criterion = CRITERIA[options.criterion]
    context = ScoringContext(dg, np.random.default_rng(options.seed), data, provider)
    if criterion.data_driven:
        context.require_data(options.criterion)  # before any slow work
    protected = set()
    for pattern in options.ignore:
        protected.update(g.id for g in dg.groups_matching(pattern))
    fixed: dict[int, float] = {}
    for pattern, ratio in options.ratio_for:  # a later pattern wins over an earlier one
        fixed.update((g.id, ratio) for g in dg.groups_matching(pattern))
    groups, skipped = [], []
    for group in dg.prunable_groups():
        if group.id in protected:
            skipped.append(f"group {group.id} ({group.root}): ignored by --ignore")
            continue
        if not options.prunes(group.kind):
            skipped.append(f"group {group.id} ({group.root}): {group.kind} " + _KIND_SWITCH[group.kind])
            continue
        if group.kind in ("heads", "head_dim") and options.head_ratio is not None:
            fixed.setdefault(group.id, options.head_ratio)  # --ratio-for patterns still win
        groups.append(group)
    if criterion.data_driven:  # one streaming pass for every group's statistics
        context.collect([n for group in groups for n in criterion.needs(context, group)], options.criterion)
    steps = group_steps(dg, grid or default_grid(provider)) if options.round_to is None else {}
    budgets = []
    for group in groups:
        size0, removed_before = (history or {}).get(group.id, (group.size, 0))
        scores = normalize(criterion(context, group))
        budgets.append(GroupBudget(group.id, group.size, scores, fixed.get(group.id), size0, removed_before,
                                   steps.get(group.id, 1)))
    return budgets, tuple(skipped)


def allocator(budgets: list[GroupBudget], options: PruneOptions, sensitivity: "Sensitivity | None" = None,
              metric: str = "macs") -> Callable[[float], dict[int, int]]:
    """level -> channels each group loses, by the options' budget mode. A sensitivity budget allocates
    by the measurements (sensitivity_budget.Ladder), ranking by saved parameters for a params target,
    by saved MACs otherwise (a latency target included)."""
    if options.budget_mode is not BudgetMode.SENSITIVITY:
        return lambda level: level_counts(budgets, options, level)
    if sensitivity is None:
        raise PlanError("--budget sensitivity allocates by measured sensitivity: measure it first "
                        "(Pruner.plan does, on calibration data)")
    from .sensitivity_budget import Ladder  # late: the measurements import the planner
    ladder = Ladder(sensitivity, budgets, saving="params" if metric == "params" else "macs",
                    max_ratio=options.max_ratio, round_to=options.round_to)
    return ladder.counts


def level_counts(budgets: list[GroupBudget], options: PruneOptions, level: float) -> dict[int, int]:
    """Channels each group loses at ``level`` under a uniform or global budget (see budget.allocate)."""
    return allocate(budgets, level, global_rank=options.budget_mode is BudgetMode.GLOBAL, max_ratio=options.max_ratio,
                    round_to=options.round_to)


def plan_for_counts(dg: DependencyGraph, budgets: list[GroupBudget], options: PruneOptions,
                    counts: dict[int, int], level: float, skipped: tuple[str, ...] = ()) -> Plan:
    decisions = []
    for b in budgets:
        count = counts.get(b.group, 0)
        if count:
            removed = tuple(sorted(int(k) for k in np.argsort(b.scores, kind="stable")[:count]))
            decisions.append(GroupDecision(b.group, str(dg.groups[b.group].root), b.size, removed))
    return keep_every_end_alive(dg, Plan(tuple(decisions), options.criterion, level, tuple(skipped)))


def keep_every_end_alive(dg: DependencyGraph, plan: Plan) -> Plan:
    """Un-remove channels where an end shared by several groups would lose all of them."""
    removed = {d.group: set(d.removed) for d in plan.decisions}
    while True:
        emptied = _emptied_end(dg, removed)
        if emptied is None:
            break
        end, gid = emptied
        group = dg.groups[gid]
        k = next(k for k in sorted(removed[gid]) if end in group.slots)
        removed[gid].discard(k)
    decisions = tuple(GroupDecision(d.group, d.root, d.size, tuple(sorted(removed[d.group])), d.reason)
                      for d in plan.decisions if removed[d.group])
    return Plan(decisions, plan.criterion, plan.ratio, plan.skipped)


def _emptied_end(dg, removed):
    """An end whose every index the removal takes (with the first group that removes some), or None.
    Groups hold disjoint indices at a shared end, so counting them is enough."""
    lost: dict = {}
    for gid, chans in removed.items():
        if not chans:
            continue
        group = dg.groups[gid]
        wanted = np.asarray(sorted(chans), dtype=np.int64)
        for end in group.ends:
            start = group.slots[end].start
            count = int((start[wanted + 1] - start[wanted]).sum())
            if count:
                lost.setdefault(end, [0, gid])[0] += count
    for end, (count, gid) in lost.items():
        if count >= dg.size(end):
            return end, gid
    return None
