"""Groups after a channel removal, derived from the groups before it instead of read again.

Removing channels changes sizes, not structure: every node, tensor and coupling stays,
and each group loses the channels the plan removed, the indices left at every end
renumbered in order. So the groups of the pruned graph are the old ones with the
removed channels dropped and each end's indices compacted (arrays only; no rule
runs). Where a removal may have changed more than sizes -- a node or tensor added or
renamed (a shared constant given a private copy), an axis left with one index (rules
may read it as broadcast) -- :func:`after_removal` returns None and the caller reads the graph again.
tests/engine/test_derive.py checks derived groups against a full rebuild on every test
architecture.
"""
from __future__ import annotations

import numpy as np

from .depgraph import DependencyGraph, End, Group, Slots
from .edits import Kept
from .ir import Graph


def after_removal(dg: DependencyGraph, graph: Graph, kept: Kept) -> DependencyGraph | None:
    """The dependency graph of ``graph``: ``dg.graph`` with channels removed (``kept``: tensor ->
    axis -> indices of the old axis kept), or None where it must be read again."""
    if not _same_structure(dg.graph, graph):
        return None
    sizes: dict[End, int | None] = {}
    remaps: dict[End, np.ndarray] = {}
    for end, data in dg.nx.nodes(data=True):
        size = data["size"]
        lost = kept.get(end.tensor, {})
        if size is not None and any(axis in lost for axis in end.axes):
            remap = _remap(dg.graph.shape(end.tensor), graph.shape(end.tensor), end.axes, lost)
            if remap is None:
                return None
            remaps[end], size = remap, int((remap >= 0).sum())
        sizes[end] = size
    groups = []
    for group in dg.groups:
        derived = _compacted(group, remaps)
        if derived is False:
            return None
        if derived is not None:
            derived.id = len(groups)
            groups.append(derived)
    return DependencyGraph.derived(dg, graph, sizes, groups)


def _remap(before, after, axes: tuple[int, ...], lost: dict[int, np.ndarray]) -> np.ndarray | None:
    """Old flat index of an end (its axes flattened row-major) -> new flat index, or -1 where removed;
    None where an axis was left with one index or the new shape does not say what was kept."""
    if before is None or after is None:
        return None
    kept = []
    for axis in axes:
        keep = np.asarray(lost[axis], dtype=np.int64) if axis in lost else np.arange(before[axis], dtype=np.int64)
        if after[axis] != len(keep) or (axis in lost and len(keep) < 2):
            return None
        kept.append(keep)
    sizes = tuple(int(before[axis]) for axis in axes)
    flat = np.ravel_multi_index(np.meshgrid(*kept, indexing="ij"), sizes).reshape(-1)  # ascending
    remap = np.full(int(np.prod(sizes)), -1, dtype=np.int64)
    remap[flat] = np.arange(len(flat), dtype=np.int64)
    return remap


def _compacted(group: Group, remaps: dict[End, np.ndarray]) -> Group | None | bool:
    """``group`` with the channels whose indices were removed dropped and the rest renumbered;
    None when it lost every channel; False when a channel lost only some of its indices
    (not a removal this derivation understands)."""
    touched = [end for end in group.ends if end in remaps]
    if not touched:
        return Group(0, group.ends, group.size, group.slots, group.blocked, group.root, group.traits)
    alive = np.ones(group.size, dtype=bool)
    for end in touched:
        slots = group.slots[end]
        gone = remaps[end][slots.index] < 0
        lost = np.bincount(slots.owner[gone], minlength=group.size)
        whole = np.diff(slots.start)
        if np.any((lost > 0) & (lost < whole)):
            return False
        alive &= lost == 0
    for end in touched:  # every end of a channel removed lost it; every end of a kept one kept it
        slots = group.slots[end]
        if np.any((remaps[end][slots.index] < 0) != ~alive[slots.owner]):
            return False
    size = int(alive.sum())
    if size == 0:
        return None
    number = np.cumsum(alive) - 1
    slots_now = {}
    for end, slots in group.slots.items():
        mine = alive[slots.owner]
        index = slots.index[mine]
        if end in remaps:
            index = remaps[end][index]
        slots_now[end] = Slots.of_owners(index, number[slots.owner[mine]], size)
    return Group(0, group.ends, size, slots_now, group.blocked, group.root, group.traits)


def _same_structure(before: Graph, after: Graph) -> bool:
    """The same nodes reading and writing the same tensors, and the same constants."""
    if len(before.nodes) != len(after.nodes) or before.params.keys() != after.params.keys():
        return False
    return all(a.name == b.name and a.inputs == b.inputs and a.outputs == b.outputs
               and a.implicit_inputs == b.implicit_inputs for a, b in zip(before.nodes, after.nodes))
