"""Group-level importance: one score per group channel, aggregated over every
coupled parameter (DepGraph), so a channel is kept if any member needs it."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .depgraph import DependencyGraph, End, EndKind, Group

Criterion = Callable[[DependencyGraph, Group, np.random.Generator], np.ndarray]


def _param_rows(graph, end: End) -> np.ndarray:
    """The parameter as a 2D array: one row per index of the end's (flattened) axes."""
    value = np.asarray(graph.params[end.tensor], dtype=np.float64)
    rest = [a for a in range(value.ndim) if a not in end.axes]
    moved = np.transpose(value, list(end.axes) + rest)
    return moved.reshape(int(np.prod([value.shape[a] for a in end.axes])), -1)


def _norm_score(dg: DependencyGraph, group: Group, power: int, ends=None) -> np.ndarray:
    total = np.zeros(group.size)
    members = [e for e in group.ends if e.kind == EndKind.PARAM] if ends is None else ends
    for end in members:
        per_index = (np.abs(_param_rows(dg.graph, end)) ** power).sum(axis=1)
        score = np.array([per_index[ch[end]].sum() if end in ch else 0.0 for ch in group.channels])
        mean = score.mean()
        if mean > 0:
            total += score / mean  # each member counts equally, whatever its scale
    return total


def l1(dg, group, rng):
    return _norm_score(dg, group, 1)


def l2(dg, group, rng):
    return _norm_score(dg, group, 2)


def roles_in(dg: DependencyGraph, group: Group, role: str) -> list[End]:
    """Parameter ends of the group that some rule declares with ``role`` (e.g. bn_scale)."""
    found = []
    for end in group.ends:
        if end.kind != EndKind.PARAM:
            continue
        for node, slot in dg.graph.consumers.get(end.tensor, []):
            spec = dg.spec(node.name)
            if spec is not None and spec.param_roles.get(slot) == role:
                found.append(end)
                break
    return found


def bn_scale(dg, group, rng):
    """Network Slimming: |gamma| of the group's BatchNorm scales (L2 if it has none)."""
    ends = roles_in(dg, group, "bn_scale")
    return _norm_score(dg, group, 1, ends) if ends else l2(dg, group, rng)


def random(dg, group, rng):
    return rng.random(group.size)


CRITERIA: dict[str, Criterion] = {"l1": l1, "l2": l2, "bn-scale": bn_scale, "random": random}
