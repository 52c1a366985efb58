"""Applying a plan: slice parameters, let rules fix attributes/constants, update shapes."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from . import weights
from .depgraph import DependencyGraph, distinct as _distinct
from .edits import EditMap
from .errors import PlanError
from .ir import Graph, Value
from .mapping import dense_axis
from .plan import Plan
from .rules import NodeView, Port, PortChange, Side, call_rule


def removed_per_dim(dg: DependencyGraph, plan: Plan) -> dict[tuple[str, tuple[int, ...]], np.ndarray]:
    """Indices removed from each (tensor, axes) the plan touches."""
    removed: dict[tuple[str, tuple[int, ...]], list[np.ndarray]] = {}
    for decision in plan.decisions:
        if decision.group >= len(dg.groups):
            raise PlanError(f"plan names group {decision.group}, the graph has {len(dg.groups)}")
        group = dg.groups[decision.group]
        if group.size != decision.size:
            raise PlanError(f"group {decision.group} has {group.size} channels, the plan expects {decision.size}")
        if not group.prunable:
            raise PlanError(f"group {decision.group} is not prunable ({'; '.join(group.blocked) or 'fixed'})")
        for end in group.ends:
            removed.setdefault((end.tensor, end.axes), []).append(group.indices(end, decision.removed))
    distinct = {k: _distinct(np.concatenate(v)) for k, v in removed.items()}
    return {k: v for k, v in distinct.items() if len(v)}


def kept_per_axis(graph: Graph, removed) -> dict[str, dict[int, np.ndarray]]:
    """Turn removed flat indices into kept indices per tensor axis (dense tensors only)."""
    kept: dict[str, dict[int, np.ndarray]] = {}
    for (tensor, axes), gone in removed.items():
        shape = graph.shape(tensor)
        sizes = tuple(shape[a] for a in axes)
        axis_pos = dense_axis(sizes)
        coords = np.unravel_index(gone, sizes)
        gone_on_axis = _distinct(coords[axis_pos])
        expected = len(gone_on_axis) * int(np.prod(sizes)) // sizes[axis_pos]
        if expected != len(gone):
            raise PlanError(f"removing {len(gone)} of {tensor} along {axes} would not leave a dense tensor")
        axis = axes[axis_pos]
        alive = np.ones(shape[axis], dtype=bool)
        alive[gone_on_axis] = False
        keep = np.flatnonzero(alive)
        if len(keep) == 0:
            raise PlanError(f"{tensor} would lose every channel along axis {axis}")
        previous = kept.setdefault(tensor, {}).get(axis)
        if previous is not None and not np.array_equal(previous, keep):
            raise PlanError(f"{tensor} is pruned inconsistently along axis {axis}")
        kept[tensor][axis] = keep
    return kept


class ChannelRemoval:
    """Remove a plan's channels (a :class:`onnxprune.passes.GraphPass` on the plan's own graph).

    Its map keeps every name (channel removal renames nothing it does not also keep), says
    which channels each tensor kept, and which tensors now hold other values (outputs of
    layers that lost input channels, and everything after them)."""

    name = "channel removal"

    def __init__(self, dg: DependencyGraph, plan: Plan):
        self.dg, self.plan = dg, plan

    def run(self, graph: Graph) -> "PassResult":
        from .passes import PassResult, same_names  # late: passes import the engine
        from .passes.layers import changed_values
        if graph is not self.dg.graph:
            raise PlanError("a channel plan applies to the graph it was made on")
        kept = kept_per_axis(graph, removed_per_dim(self.dg, self.plan))
        new = apply_plan(self.dg, self.plan, kept)
        names = same_names(graph, new)
        edits = EditMap(names.tensors, names.nodes, kept, frozenset(changed_values(new, kept, self.dg.registry)))
        return PassResult(self.name, new, self.plan.removed_channels, edits=edits)


def apply_plan(dg: DependencyGraph, plan: Plan, kept=None) -> Graph:
    """A new Graph with the plan's channels removed; the input graph is not modified."""
    graph = dg.graph
    kept = kept if kept is not None else kept_per_axis(graph, removed_per_dim(dg, plan))
    params = dict(graph.params)
    for name, axes in kept.items():
        if name in params:
            value = params[name]
            for axis, keep in axes.items():
                value = np.take(value, keep, axis=axis)
            weights.release(params[name])  # a mapped weight, read once to slice it: its pages go back
            params[name] = value
    nodes, new_inputs, upstream = [], {}, []
    for node in graph.nodes:
        new = copy.copy(node)  # every container copied too: the input graph stays as it was
        new.attrs, new.attr_types = dict(node.attrs), dict(node.attr_types)
        new.inputs, new.outputs, new.implicit_inputs = list(node.inputs), list(node.outputs), list(node.implicit_inputs)
        nodes.append(new)
        changes = _changes(graph, node, kept)
        spec = dg.spec(node.name)
        if not changes or spec is None or spec.rewrite is None:
            continue
        view = NodeView(node, graph, dg.analysis)
        updates = call_rule("rewrite", node, spec.rewrite, view, changes, strict=dg.strict)
        for key, value in updates.attrs.items():
            if value is None:
                new.attrs.pop(key, None)
                new.attr_types.pop(key, None)
            else:
                new.attrs[key] = value
        for slot, value in updates.inputs.items():
            _request(new_inputs, (node.name, slot), value)
        _omit_inputs(new, updates.drop_inputs)
        for path, value in updates.upstream.items():
            upstream.append((path, value))
    by_name = {n.name: n for n in nodes}
    for path, value in upstream:
        nodes, key = _private_path(nodes, by_name, path)
        _request(new_inputs, key, value)
    readers = _readers(nodes)
    for (node_name, slot), value in new_inputs.items():
        new = by_name[node_name]
        while len(new.inputs) <= slot:
            new.inputs.append("")
        name = new.inputs[slot]
        shared = not name or name not in graph.params or len(readers.get(name, [])) > 1 \
            or name in graph.graph_output_names
        if shared:
            name = _fresh_name(f"{node_name}_in{slot}_pruned", params)
            new.inputs[slot] = name
        params[name] = value
    return dataclasses.replace(graph, nodes=nodes, params=params, values=_resized(graph.values, kept),
                               inputs=list(graph.inputs), outputs=list(graph.outputs),
                               declared=_resized(graph.declared, kept))


def _omit_inputs(node, slots) -> None:
    """Leave optional inputs empty (trailing empty names dropped, as onnx writes them)."""
    if not slots:
        return
    for slot in slots:
        if slot < len(node.inputs):
            node.inputs[slot] = ""
    while node.inputs and not node.inputs[-1]:
        node.inputs.pop()


def _request(new_inputs: dict, key: tuple[str, int], value: np.ndarray) -> None:
    if key in new_inputs and not np.array_equal(new_inputs[key], value):
        raise PlanError(f"input {key[1]} of {key[0]} would need two different values")
    new_inputs[key] = value


def _readers(nodes) -> dict[str, list]:
    table: dict[str, list] = {}
    for n in nodes:
        for name in list(n.inputs) + list(n.implicit_inputs):
            if name:
                table.setdefault(name, []).append(n)
    return table


def _private_path(nodes: list, by_name: dict, path) -> tuple[list, tuple[str, int]]:
    """Walk ``path`` from its first node up to the constant, copying every node on the way
    that other nodes also read, so that rewriting the constant changes this reader only."""
    reader = by_name[path[0][0]]
    for (_, slot), (producer_name, next_slot) in zip(path, path[1:]):
        tensor = reader.inputs[slot]
        producer = next(n for n in nodes if tensor in n.outputs)
        if len(_readers(nodes).get(tensor, [])) > 1:
            clone = copy.copy(producer)
            clone.attrs, clone.inputs = dict(producer.attrs), list(producer.inputs)
            taken = {o for n in nodes for o in n.outputs} | set(by_name)
            clone.name = _fresh_name(f"{producer.name}_for_{reader.name}", taken)
            clone.outputs = [_fresh_name(f"{o}_for_{reader.name}", taken) if o else o for o in producer.outputs]
            reader.inputs[slot] = clone.outputs[producer.outputs.index(tensor)]
            nodes = list(nodes)
            nodes.insert(nodes.index(producer) + 1, clone)
            by_name[clone.name] = clone
            producer = clone
        reader = producer
    return nodes, (reader.name, path[-1][1])


def _resized(values: dict[str, Value], kept) -> dict[str, Value]:
    """Shapes with pruned axes shrunk; other (possibly symbolic) dims untouched."""
    out = {}
    for name, value in values.items():
        if name in kept and value.shape is not None:
            shape = list(value.shape)
            for axis, keep in kept[name].items():
                shape[axis] = len(keep)
            value = Value(name, value.dtype, tuple(shape))
        out[name] = value
    return out


def _changes(graph: Graph, node, kept) -> dict[Port, PortChange]:
    changes = {}
    for side, names in ((Side.IN, node.inputs), (Side.OUT, node.outputs)):
        for slot, name in enumerate(names):
            if name in kept:
                changes[Port(side, slot)] = PortChange(graph.shape(name), kept[name])
    return changes


def _fresh_name(base: str, taken) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name
