"""Choosing what to remove: an immutable, JSON-serialisable pruning plan."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .depgraph import DependencyGraph
from .importance import CRITERIA
from .options import PruneOptions


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


def n_to_remove(size: int, ratio: float, round_to: int = 1) -> int:
    """How many of ``size`` channels go: ratio of them, keeping a multiple of round_to, >= 1 kept."""
    keep = size - math.floor(size * ratio + 1e-9)
    if round_to > 1:
        if size <= round_to:
            return 0
        keep = min(size, max(round_to, math.ceil(keep / round_to) * round_to))
    return max(0, min(size - 1, size - keep))


def make_plan(dg: DependencyGraph, options: PruneOptions | None = None, **kwargs) -> Plan:
    """Score every prunable group and choose its channels to remove (``kwargs``: PruneOptions fields)."""
    options = (options or PruneOptions()).with_(**kwargs).check()
    ratio, criterion, round_to = options.ratio, options.criterion, options.round_to
    protected = set()
    for pattern in options.ignore:
        protected.update(g.id for g in dg.groups_matching(pattern))
    rng = np.random.default_rng(options.seed)
    decisions, skipped = [], []
    for group in dg.prunable_groups():
        if group.id in protected:
            skipped.append(f"group {group.id} ({group.root}): ignored by --ignore")
            continue
        count = n_to_remove(group.size, ratio, round_to)
        if count == 0:
            continue
        scores = CRITERIA[criterion](dg, group, rng)
        removed = tuple(sorted(int(k) for k in np.argsort(scores, kind="stable")[:count]))
        decisions.append(GroupDecision(group.id, str(group.root), group.size, removed))
    plan = Plan(tuple(decisions), criterion, ratio, tuple(skipped))
    return keep_every_end_alive(dg, plan)


def keep_every_end_alive(dg: DependencyGraph, plan: Plan) -> Plan:
    """Un-remove channels where an end shared by several groups would lose all of them."""
    removed = {d.group: set(d.removed) for d in plan.decisions}
    while True:
        emptied = _emptied_end(dg, removed)
        if emptied is None:
            break
        end, gid = emptied
        group = dg.groups[gid]
        k = next(k for k in sorted(removed[gid]) if end in group.channels[k])
        removed[gid].discard(k)
    decisions = tuple(GroupDecision(d.group, d.root, d.size, tuple(sorted(removed[d.group])), d.reason)
                      for d in plan.decisions if removed[d.group])
    return Plan(decisions, plan.criterion, plan.ratio, plan.skipped)


def _emptied_end(dg, removed):
    lost: dict = {}
    for gid, chans in removed.items():
        group = dg.groups[gid]
        for k in chans:
            for end, idx in group.channels[k].items():
                lost.setdefault(end, [set(), gid])[0].update(idx.tolist())
    for end, (indices, gid) in lost.items():
        if len(indices) >= dg.size(end):
            return end, gid
    return None
