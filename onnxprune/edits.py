"""What an edit did to a graph: the old-to-new map every pass returns, and the editor that makes it.

Channel removal keeps node and tensor names, but fusion and depth pruning do not:
folding a normalization into the layer before it leaves that layer's name on a node
that now computes something else, removing a block deletes nodes and rewires their
readers. So nothing downstream (recovery comparing with the original, a next pruning
round, a saved plan, a report) may link two versions of a graph by name. Every pass
returns an :class:`EditMap` instead: for each tensor and node of the graph it was
given, what stands for it in the graph it made (or ``None``: gone), which channels
survive, and which tensors now hold other values. Maps compose (:meth:`EditMap.then`),
so a model's whole history, original to now, is one map.

:class:`GraphEditor` is how a pass edits: remove, replace and insert nodes, set
constants, reroute readers, record what merged into what; :meth:`GraphEditor.finish`
drops what became dead and returns the new graph with its complete map.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Mapping

import numpy as np

from .errors import PlanError
from .ir import Graph, Node

# tensor -> axis -> indices (into the matching tensor of the earlier graph) still present
Kept = dict[str, dict[int, np.ndarray]]


@dataclass(frozen=True)
class EditMap:
    """Old graph -> new graph.

    ``tensors``: every old tensor (activations, parameters, graph inputs) -> the new tensor
    that stands for it, holding its values on the kept channels (unless it is in
    ``changed``), or None where nothing does. ``nodes``: every old node -> the new node
    that does its work (several old nodes merged into one map to it), or None (deleted).
    ``kept``: new tensor -> axis -> indices into the old tensor's axis, for tensors that
    lost channels. ``changed``: new tensors whose values differ from what their old
    tensor held (on the kept channels): everything downstream of an inexact edit.
    """

    tensors: Mapping[str, str | None]
    nodes: Mapping[str, str | None]
    kept: Kept = field(default_factory=dict)
    changed: frozenset[str] = frozenset()

    @staticmethod
    def identity(graph: Graph) -> "EditMap":
        return EditMap({t: t for t in _tensor_names(graph)}, {n.name: n.name for n in graph.nodes})

    def then(self, later: "EditMap") -> "EditMap":
        """This edit followed by ``later`` (which was made on this edit's new graph)."""
        tensors = {old: (later.tensors.get(mid) if mid is not None else None) for old, mid in self.tensors.items()}
        nodes = {old: (later.nodes.get(mid) if mid is not None else None) for old, mid in self.nodes.items()}
        kept: Kept = {}
        for new, axes in later.kept.items():  # indices into the middle tensor: map them further back
            mid = later.tensor_origin(new)
            earlier = self.kept.get(mid, {}) if mid is not None else {}
            kept[new] = {axis: (earlier[axis][keep] if axis in earlier else keep) for axis, keep in axes.items()}
        for mid, axes in self.kept.items():  # channels lost earlier, carried by the tensor standing for them
            new = later.tensors.get(mid)
            if new is not None and new not in kept:
                kept[new] = dict(axes)
        changed = set(later.changed)
        changed.update(later.tensors[t] for t in self.changed if later.tensors.get(t) is not None)
        return EditMap(tensors, nodes, kept, frozenset(changed))

    @cached_property
    def _tensor_inverse(self) -> dict[str, str]:
        inverse: dict[str, str] = {}
        for old, new in self.tensors.items():
            if new is not None:
                inverse.setdefault(new, old)
        return inverse

    @cached_property
    def _node_inverse(self) -> dict[str, tuple[str, ...]]:
        inverse: dict[str, list[str]] = {}
        for old, new in self.nodes.items():
            if new is not None:
                inverse.setdefault(new, []).append(old)
        return {k: tuple(v) for k, v in inverse.items()}

    def tensor_origin(self, new: str) -> str | None:
        """The old tensor ``new`` stands for (None: a tensor the edit created)."""
        return self._tensor_inverse.get(new)

    def node_origins(self, new: str) -> tuple[str, ...]:
        """The old nodes whose work the new node does (empty: a node the edit created)."""
        return self._node_inverse.get(new, ())

    def kept_indices(self, tensor: str, axis: int, size: int) -> np.ndarray:
        """Old indices of the ``size`` channels new ``tensor`` has along ``axis``."""
        return self.kept.get(tensor, {}).get(axis, np.arange(size))

    def lost_channels(self, tensor: str, axis: int) -> bool:
        return axis in self.kept.get(tensor, {})

    @property
    def deleted_nodes(self) -> tuple[str, ...]:
        return tuple(old for old, new in self.nodes.items() if new is None)

    @property
    def merged_nodes(self) -> dict[str, tuple[str, ...]]:
        """New node -> the old nodes merged into it (only where more than one)."""
        return {new: olds for new, olds in self._node_inverse.items() if len(olds) > 1}

    def summary(self) -> dict:
        """What the report shows of an edit."""
        return {"deleted_nodes": len(self.deleted_nodes), "merged": {k: list(v) for k, v in self.merged_nodes.items()},
                "tensors_with_lost_channels": len(self.kept), "changed_tensors": len(self.changed)}


def _tensor_names(graph: Graph) -> list[str]:
    names = dict.fromkeys(v.name for v in graph.inputs)
    names.update(dict.fromkeys(graph.params))
    for node in graph.nodes:
        names.update(dict.fromkeys(t for t in node.outputs if t))
    return list(names)


class GraphEditor:
    """Collects edits to one graph, then builds the new graph and its :class:`EditMap`.

    The input graph is never modified. Node order stays topological: a replacement takes
    the place of the node it replaces, an inserted node goes right after its anchor.
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self._removed: set[str] = set()
        self._replaced: dict[str, Node] = {}
        self._inserted: dict[str, list[Node]] = {}  # anchor node name -> nodes after it
        self._params: dict[str, np.ndarray] = {}
        self._reroute: dict[str, str] = {}
        self._inexact_reroutes: set[str] = set()  # rerouted tensors whose readers now compute other values
        self._tensor_map: dict[str, str | None] = {}
        self._node_map: dict[str, str | None] = {}
        self._changed: set[str] = set()  # tensors (new graph) whose values differ from before
        self._taken = set(_tensor_names(graph)) | {n.name for n in graph.nodes}

    # --- edits
    def fresh(self, base: str) -> str:
        """A node or tensor name not used in the graph or by an earlier edit."""
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        return name

    def remove_node(self, name: str, into: str | None = None) -> None:
        """Delete a node; ``into``: the new node that now does its work (a merge)."""
        self._removed.add(name)
        self._node_map[name] = into

    def replace_node(self, name: str, new: Node) -> None:
        """Put ``new`` in the place of node ``name`` (which maps to it)."""
        self._replaced[name] = new
        self._node_map[name] = new.name
        self._taken.add(new.name)

    def insert_after(self, anchor: str, node: Node) -> None:
        self._inserted.setdefault(anchor, []).append(node)
        self._taken.add(node.name)

    def set_param(self, name: str, value: np.ndarray) -> None:
        """A new constant (or a new value for one): callers give fresh names to values others read."""
        self._params[name] = value
        self._taken.add(name)

    def reroute(self, old: str, new: str, same_values: bool = False) -> None:
        """Every reader of tensor ``old`` reads ``new`` instead. Unless ``same_values``, what the
        readers compute now differs from before (e.g. a residual join replaced by its skip input)."""
        if old in self.graph.graph_output_names:
            raise PlanError(f"cannot reroute {old!r}: it is a graph output")
        self._reroute[old] = new
        if not same_values:
            self._inexact_reroutes.add(old)

    def mark_changed(self, tensor: str) -> None:
        """Tensor ``tensor`` of the new graph holds other values than before (so does all after it)."""
        self._changed.add(tensor)

    def map_tensor(self, old: str, new: str | None) -> None:
        """Record that new tensor ``new`` stands for old tensor ``old`` (None: nothing does)."""
        self._tensor_map[old] = new

    # --- result
    def finish(self, kept: Kept | None = None, prune_dead: bool = True) -> tuple[Graph, EditMap]:
        graph = self.graph
        nodes: list[Node] = []
        for node in graph.nodes:
            if node.name in self._replaced:
                nodes.append(self._replaced[node.name])
            elif node.name not in self._removed:
                nodes.append(node)
            nodes.extend(self._inserted.get(node.name, ()))
        changed = set(self._changed)
        for node in nodes:
            if any(t in self._inexact_reroutes for t in list(node.inputs) + list(node.implicit_inputs)):
                changed.update(o for o in node.outputs if o)
        nodes = [self._rerouted(n) for n in nodes]
        params = {**graph.params, **self._params}
        outputs = graph.graph_output_names
        if prune_dead:
            nodes = _live_nodes(nodes, outputs)
        read = {t for n in nodes for t in list(n.inputs) + list(n.implicit_inputs) if t} | outputs
        params = {k: v for k, v in params.items() if k in read}
        produced = {t for n in nodes for t in n.outputs if t} | set(params) | graph.graph_input_names
        values = {k: v for k, v in graph.values.items() if k in produced}
        declared = {k: v for k, v in graph.declared.items() if k in produced}
        new = dataclasses.replace(graph, nodes=nodes, params=params, values=values, declared=declared,
                                  inputs=list(graph.inputs), outputs=list(graph.outputs))
        return new, self._map(graph, new, kept or {}, changed)

    def _rerouted(self, node: Node) -> Node:
        if not any(t in self._reroute for t in list(node.inputs) + list(node.implicit_inputs)):
            return node
        new = copy.copy(node)
        new.inputs = [self._final(t) for t in node.inputs]
        new.implicit_inputs = [self._final(t) for t in node.implicit_inputs]
        return new

    def _final(self, tensor: str) -> str:
        seen = set()
        while tensor in self._reroute and tensor not in seen:
            seen.add(tensor)
            tensor = self._reroute[tensor]
        return tensor

    def _map(self, old: Graph, new: Graph, kept: Kept, changed: set[str]) -> EditMap:
        present = set(_tensor_names(new))
        tensors = {t: (t if t in present else None) for t in _tensor_names(old)}
        tensors.update(self._tensor_map)
        live = {n.name for n in new.nodes}
        nodes = {}
        for node in old.nodes:
            target = self._node_map.get(node.name, node.name)
            nodes[node.name] = target if target in live else None
        return EditMap(tensors, nodes, kept, frozenset(_downstream(new, changed)))


def _live_nodes(nodes: list[Node], outputs: set[str]) -> list[Node]:
    """Nodes some graph output depends on (dead code left by an edit is dropped)."""
    needed, keep = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.outputs if o):
            keep.append(node)
            needed.update(t for t in list(node.inputs) + list(node.implicit_inputs) if t)
    return keep[::-1]


def _downstream(graph: Graph, changed: Iterable[str]) -> set[str]:
    """``changed`` and every tensor computed from one of them."""
    changed = set(changed)
    for node in graph.nodes:
        if any(t in changed for t in list(node.inputs) + list(node.implicit_inputs) if t):
            changed.update(o for o in node.outputs if o)
    return changed
