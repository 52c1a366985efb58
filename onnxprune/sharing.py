"""Shared constants: untie them for analysis, tie them again on output.

Exporters deduplicate equal initializers (all-zero biases, equal layer
scales), so unrelated layers often read the same tensor. Taken literally, that
couples their channels into one group. A constant can always be copied without
changing the model, so each reader gets its own name for analysis (the arrays
are shared, not copied); when writing, copies that are still equal to their
original are folded back, so genuinely tied weights stay tied.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from .ir import Graph


def unshare_params(graph: Graph) -> tuple[Graph, dict[str, str]]:
    """Give every extra reader of a non-scalar parameter its own name; return (graph, copy -> original)."""
    seen: dict[str, int] = {}
    copies: dict[str, str] = {}
    params = dict(graph.params)
    nodes = []
    protected = graph.graph_output_names | graph.graph_input_names
    for node in graph.nodes:
        new = node
        for slot, name in enumerate(node.inputs):
            value = graph.params.get(name)
            if value is None or value.size <= 1 or name in protected:
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] == 1:
                continue
            if new is node:
                new = copy.copy(node)
                new.inputs = list(node.inputs)
            alias = _fresh(f"{name}__reader{seen[name]}", params)
            params[alias] = value
            copies[alias] = name
            new.inputs[slot] = alias
        nodes.append(new)
    if not copies:
        return graph, {}
    return dataclasses.replace(graph, nodes=nodes, params=params), copies


def reshare_params(graph: Graph, copies: dict[str, str]) -> Graph:
    """Point readers of a copy back at its original wherever both still hold the same values."""
    params = dict(graph.params)
    back = {}
    for alias, original in copies.items():
        a, b = params.get(alias), params.get(original)
        if a is not None and b is not None and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b):
            back[alias] = original
            del params[alias]
    if not back:
        return graph
    nodes = []
    for node in graph.nodes:
        if any(name in back for name in node.inputs):
            node = copy.copy(node)
            node.inputs = [back.get(name, name) for name in node.inputs]
        nodes.append(node)
    return dataclasses.replace(graph, nodes=nodes, params=params)


def _fresh(base: str, taken) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name
