"""Masking: set a group's channels to values that make them vanish, without removing them.

This is the reference a physical prune must match (the DepGraph oracle), and
a cheap way to preview a pruning's effect on accuracy.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .depgraph import DependencyGraph, EndKind, Group
from .ir import Graph


def mask_group(dg: DependencyGraph, group: Group, channels) -> Graph:
    """A copy of the graph with ``channels`` of ``group`` neutralised in every coupled parameter.

    Quantized codes are set to the code that reads as 0 (their zero point), and the scales and
    zero points describing them are left as they are: zeroing a code instead would read as
    ``-zero_point * scale``."""
    params = dict(dg.graph.params)
    for end in group.ends:
        if end.kind != EndKind.PARAM or dg.is_quant_param(end.tensor):
            continue
        idx = group.indices(end, channels)
        if len(idx) == 0:
            continue
        value = np.array(params[end.tensor], copy=True)
        rest = [a for a in range(value.ndim) if a not in end.axes]
        moved = np.transpose(value, list(end.axes) + rest)
        flat = moved.reshape(-1, *[value.shape[a] for a in rest])
        stored = dg.stored(end.tensor)
        if stored is not None:
            zero = np.transpose(stored.zero, list(end.axes) + rest).reshape(flat.shape)
            flat[idx] = zero[idx]
        else:
            flat[idx] = _neutral(dg, end.tensor)
        params[end.tensor] = np.transpose(flat.reshape(moved.shape), np.argsort(list(end.axes) + rest))
    return dataclasses.replace(dg.graph, params=params)


def _neutral(dg: DependencyGraph, tensor: str) -> float:
    for node, slot in dg.graph.consumers.get(tensor, []):
        spec = dg.spec(node.name)
        if spec is not None and slot in spec.neutral:
            return spec.neutral[slot]
    return 0.0
