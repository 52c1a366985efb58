"""What the fusion rewrites share: the linear layers and affine nodes of a graph (read
through the rules), the checks every fusion makes before it touches a graph, and
writing a re-parameterized layer back through the editor.

Fusions compute in float64 and store in the weight's own dtype; they are exact up to
that rounding. None of them edits a constant in place: new values get fresh names, so a
constant that other nodes read stays as it was for them.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Mapping

import numpy as np

from ...edits import GraphEditor
from ...ir import Graph, Node
from ...registry import Registry
from ...rules import Affine, Barrier, Geometry, LinearForm, NodeView, OpSpec, Updates


@dataclass(frozen=True)
class Layer:
    """A linear layer: its main node, its matrix view, and every node from the main one to
    the tensor the view computes (a MatMul and the Add of its bias)."""

    node: Node
    form: LinearForm
    nodes: tuple[str, ...]

    @property
    def input(self) -> str:
        return self.node.inputs[self.form.input_slot]

    @property
    def output(self) -> str:
        return self.form.output

    @property
    def pointwise(self) -> bool:
        """Each output position reads the input at that position only (a dense layer, a 1x1
        convolution with stride 1 and no padding): a plain matrix product per position."""
        d = self.form.displacements
        return (d is not None and len(d) == 1 and not np.any(d) and all(s == 1 for s in self.form.strides)
                and not self.form.padded)

    def matrix(self) -> np.ndarray:
        return self.form.matrix().astype(np.float64)

    def bias(self) -> np.ndarray | None:
        bias = self.form.bias()
        return None if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)

    def taps(self) -> int:
        return len(self.form.displacements) if self.form.displacements is not None else 1


class Scope:
    """One graph as fusion sees it: its layers, affine nodes and passthrough nodes (computed once)."""

    def __init__(self, graph: Graph, registry: Registry, tied: Mapping[str, str]):
        self.graph, self.registry, self.tied = graph, registry, tied

    def spec(self, node: Node) -> OpSpec | None:
        graph = self.graph
        return self.registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))

    def view(self, node: Node) -> NodeView:
        return NodeView(node, self.graph)

    @cached_property
    def layers(self) -> dict[str, Layer]:
        """Main node name -> its layer."""
        found = {}
        for node in self.graph.nodes:
            spec = self.spec(node)
            if spec is None or spec.linear is None:
                continue
            form = spec.linear(self.view(node))
            nodes = _layer_nodes(self.graph, node, form) if form is not None else None
            if nodes is not None:
                found[node.name] = Layer(node, form, nodes)
        return found

    @cached_property
    def layer_by_output(self) -> dict[str, Layer]:
        return {layer.output: layer for layer in self.layers.values()}

    @cached_property
    def in_layers(self) -> set[str]:
        """Every node that is part of some layer (a bias Add is no affine node of its own)."""
        return {name for layer in self.layers.values() for name in layer.nodes}

    def affine(self, node: Node) -> Affine | None:
        spec = self.spec(node)
        if spec is None or spec.affine is None or node.name in self.in_layers:
            return None
        return spec.affine(self.view(node))

    def passthrough(self, node: Node) -> Callable[[NodeView], Barrier | None] | None:
        """The rule saying whether the node hands its input through (None: its op never does)."""
        spec = self.spec(node)
        return spec.passthrough if spec is not None else None

    def shape_readers(self, tensor: str) -> list[Node]:
        """Readers that look at the tensor's shape only (their rule computes their output from
        input shapes: Shape, Size): any tensor of that shape serves them as well."""
        return [node for node in self.readers(tensor) if (spec := self.spec(node)) is not None and spec.fold]

    def readers(self, tensor: str) -> list[Node]:
        return [node for node, _ in self.graph.consumers.get(tensor, [])]

    def shape(self, tensor: str) -> tuple[int, ...] | None:
        return self.graph.shape(tensor)

    # --- checks: each returns a reason to refuse, or None
    def private(self, tensor: str, reader: str) -> str | None:
        """``tensor`` flows only into node ``reader`` (it disappears when they merge)."""
        if tensor in self.graph.graph_output_names:
            return f"tensor {tensor} is a graph output"
        others = sorted({n.name for n in self.readers(tensor) if n.name != reader})
        if others:
            return f"tensor {tensor} is also read by {', '.join(others[:3])}"
        return None

    def own_weights(self, layer: Layer, match: set[str]) -> str | None:
        """The layer's weights (constants of two or more axes) are read by no node outside the
        match: folding into a tied weight would untie it. A shared vector (exporters dedupe
        equal biases, often zeros) just gets its own copy."""
        original = {}
        for alias, name in self.tied.items():
            original.setdefault(name, {name}).add(alias)
        for name in layer.nodes:
            for tensor in self.graph.node_by_name[name].inputs:
                value = self.graph.params.get(tensor)
                if value is None or value.ndim < 2:
                    continue
                tie = original.get(self.tied.get(tensor, tensor), {tensor})
                outside = sorted({n.name for t in tie for n in self.readers(t)} - match)
                if outside:
                    return f"weight {self.tied.get(tensor, tensor)} is shared with {', '.join(outside[:3])}"
        return None

    def floating(self, *layers: Layer) -> str | None:
        for layer in layers:
            if not np.issubdtype(layer.form.matrix().dtype, np.floating):
                return f"{layer.node.name} has {layer.form.matrix().dtype} weights, not float"
        dtypes = {layer.form.matrix().dtype for layer in layers}
        return f"the layers' weights differ in type ({', '.join(map(str, dtypes))})" if len(dtypes) > 1 else None

    def rows(self, layer: Layer, tensor: str | None = None) -> int | None:
        """Output positions of the layer (its input's shape), for MAC counts."""
        shape = self.shape(tensor or layer.input)
        return None if shape is None else int(layer.form.n_rows(tuple(shape)))


class Shared:
    """Base of the fusion rewrites: the rules and the ties between constants they read (the
    copy -> original names of :func:`onnxprune.sharing.unshare_params`), and the graph's
    :class:`Scope`, built once per graph."""

    def __init__(self, registry: Registry, tied: Mapping[str, str] | None = None):
        self.registry, self.tied = registry, dict(tied or {})
        self._scope: Scope | None = None

    def scope(self, graph: Graph) -> Scope:
        if self._scope is None or self._scope.graph is not graph:
            self._scope = Scope(graph, self.registry, self.tied)
        return self._scope


def along(value: np.ndarray, axis: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """``value`` (broadcast against a tensor of ``shape``) as one number per index of ``axis``,
    or None where it varies along another axis."""
    value = np.asarray(value, dtype=np.float64)
    rank = len(shape)
    if value.ndim > rank:
        return None
    value = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if any(value.shape[a] != 1 for a in range(rank) if a != axis) or value.shape[axis] not in (1, shape[axis]):
        return None
    return np.broadcast_to(value.reshape(-1), (shape[axis],)).copy()


def per_channel(affine: Affine, axis: int, shape) -> tuple[np.ndarray, np.ndarray] | None:
    """An affine node's scale and shift per channel of ``axis`` (None: they vary along other axes)."""
    if shape is None:
        return None
    scale, shift = along(affine.scale, axis, tuple(shape)), along(affine.shift, axis, tuple(shape))
    return None if scale is None or shift is None else (scale, shift)


def columns_refusal(layer: Layer) -> str | None:
    """Why the layer's columns cannot be read as [channel, tap] (None: they can)."""
    form = layer.form
    if form.displacements is None:
        return f"{layer.node.name}'s rows read no known window of its input (input shape unknown, or no fixed window)"
    taps = layer.taps()
    if not np.array_equal(np.asarray(form.k_channel) * taps + np.asarray(form.k_offset), np.arange(len(form.k_channel))):
        return f"{layer.node.name}'s columns are not laid out channel by channel"
    return None


def by_tap(layer: Layer) -> np.ndarray:
    """The layer's matrix as [groups, outputs per group, inputs per group, taps]."""
    matrix = layer.matrix()
    return matrix.reshape(matrix.shape[0], matrix.shape[1], -1, layer.taps())


def bias_refusal(layer: Layer, bias: np.ndarray | None) -> str | None:
    if bias is not None and np.any(bias) and layer.bias() is None and not layer.form.can_add_bias:
        return f"{layer.node.name} has no bias to take the shift"
    return None


def write_layer(graph: Graph, editor: GraphEditor, layer: Layer, matrix: np.ndarray, bias: np.ndarray | None,
                output: str | None = None, input: str | None = None, geometry: Geometry | None = None) -> None:
    """Replace the layer's nodes by copies holding ``matrix`` and ``bias`` (fresh constant names),
    reading ``input`` and writing its result as ``output`` where given (``geometry``: a new kernel
    grid). Tensors inside the layer keep their names but not their values: the map forgets them."""
    dtype, before = layer.form.matrix().dtype, layer.bias()
    if bias is not None and (np.array_equal(bias.astype(dtype), before.astype(dtype)) if before is not None
                             else not np.any(bias)):
        bias = None  # as it was: the layer keeps its bias constant (which others may share)
    updates = layer.form.store(matrix.astype(dtype), None if bias is None else bias.astype(dtype), geometry)
    per_node = {layer.node.name: updates, **updates.others}
    for name in layer.nodes:
        node = graph.node_by_name[name]
        new = copy.copy(node)
        new.inputs, new.outputs = list(node.inputs), list(node.outputs)
        new.attrs, new.attr_types = dict(node.attrs), dict(node.attr_types)
        _apply(new, per_node.get(name, Updates()), editor)
        if input is not None and name == layer.node.name:
            new.inputs[layer.form.input_slot] = input
        for k, tensor in enumerate(node.outputs):
            if tensor == layer.output and output is not None:
                new.outputs[k] = output
            elif tensor and tensor != layer.output:
                editor.map_tensor(tensor, None)
        editor.replace_node(name, new)


def _apply(node: Node, updates: Updates, editor: GraphEditor) -> None:
    for slot, value in updates.inputs.items():
        base = node.inputs[slot] if slot < len(node.inputs) and node.inputs[slot] else f"{node.name}_in{slot}"
        name = editor.fresh(f"{base}_fused")
        editor.set_param(name, value)
        while len(node.inputs) <= slot:
            node.inputs.append("")
        node.inputs[slot] = name
    for key, value in updates.attrs.items():
        if value is None:
            node.attrs.pop(key, None)
            node.attr_types.pop(key, None)
        else:
            node.attrs[key] = value
    for slot in updates.drop_inputs:
        if slot < len(node.inputs):
            node.inputs[slot] = ""
    while node.inputs and not node.inputs[-1]:
        node.inputs.pop()


def _layer_nodes(graph: Graph, node: Node, form: LinearForm) -> tuple[str, ...] | None:
    """The main node and the nodes after it up to the tensor the view computes, each reached
    through its one non-constant input."""
    chain, tensor = [], form.output
    while True:
        produced = graph.producers.get(tensor)
        if produced is None:
            return None
        producer = produced[0]
        if producer.name == node.name:
            return (node.name, *reversed(chain))
        chain.append(producer.name)
        data = [t for t in producer.inputs if t and t not in graph.params]
        if len(data) != 1 or len(chain) > 4:
            return None
        tensor = data[0]
