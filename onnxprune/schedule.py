"""Iterative pruning (``--steps K``): K rounds, each re-scoring the model the last one left.

Round i asks for i/K of the final budget, counted against the original model:
the ratio (uniform, global, or per ``--ratio-for`` pattern) grows linearly to
the one asked for, a target fraction shrinks linearly from 1 to the target.
:class:`Lineage` follows each original group through the rounds, so caps and
ratios count original channels, and the rounds compose into one plan on the
original graph (re-applying it gives the same model).
"""
from __future__ import annotations

from dataclasses import dataclass

from .depgraph import DependencyGraph, EndKind, Group
from .options import PruneOptions
from .plan import GroupDecision, Plan


def round_options(options: PruneOptions, step: int, steps: int) -> PruneOptions:
    """The options of round ``step`` (1-based) of ``steps``: cumulative ratios and targets."""
    share = step / steps
    changes = dict(ratio=options.ratio * share, steps=1,
                   ratio_for=tuple((pattern, ratio * share) for pattern, ratio in options.ratio_for))
    if options.target is not None:
        metric, target = options.target
        changes[f"target_{metric}"] = 1.0 - (1.0 - target) * share
    return options.with_(**changes)


def _key(group: Group) -> frozenset:
    """What names a group across rounds: its ends other than parameters (pruning renames some
    parameters, never node ports or graph inputs/outputs)."""
    return frozenset(e for e in group.ends if e.kind != EndKind.PARAM)


@dataclass
class Lineage:
    """For each prunable group of the original graph, which of its original channels are still there."""

    original: DependencyGraph

    def __post_init__(self) -> None:
        groups = self.original.prunable_groups()
        self.kept = {g.id: list(range(g.size)) for g in groups}
        keys = [_key(g) for g in groups]
        self._by_key = {k: g.id for k, g in zip(keys, groups) if keys.count(k) == 1}
        self.composable = True

    def _origin(self, group: Group) -> int | None:
        gid = self._by_key.get(_key(group))
        return gid if gid is not None and len(self.kept[gid]) == group.size else None

    def history(self, dg: DependencyGraph) -> dict[int, tuple[int, int]]:
        """Current group id -> (original size, channels removed so far), for groups we can follow."""
        out = {}
        for group in dg.prunable_groups():
            gid = self._origin(group)
            if gid is not None:
                size0 = self.original.groups[gid].size
                out[group.id] = (size0, size0 - len(self.kept[gid]))
        return out

    def record(self, dg: DependencyGraph, plan: Plan) -> None:
        """Note a round's plan (made on ``dg``); a group we cannot follow makes the rounds uncomposable."""
        for decision in plan.decisions:
            gid = self._origin(dg.groups[decision.group])
            if gid is None:
                self.composable = False
                continue
            gone = set(decision.removed)
            self.kept[gid] = [c for k, c in enumerate(self.kept[gid]) if k not in gone]

    def plan(self, criterion: str, ratio: float, skipped: tuple[str, ...] = ()) -> Plan | None:
        """All rounds as one plan on the original graph (None if some group could not be followed)."""
        if not self.composable:
            return None
        decisions = []
        for gid, kept in self.kept.items():
            group = self.original.groups[gid]
            removed = tuple(sorted(set(range(group.size)) - set(kept)))
            if removed:
                decisions.append(GroupDecision(gid, str(group.root), group.size, removed))
        return Plan(tuple(decisions), criterion, ratio, skipped)
