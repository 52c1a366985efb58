"""Fold an affine node (x * scale + shift per channel: BatchNorm in inference, Mul/Add by a
constant) into the linear layer next to it.

After the layer it is always exact: ``s * (W x + b) + t = (s W) x + (s b + t)``. Before
it, ``W (s x + t) + b = (W s) x + (W t + b)`` holds wherever the layer reads the input;
a zero-padded convolution also reads zeros outside it, where the shift ``t`` never was,
so a shift before one is refused.
"""
from __future__ import annotations

import copy

import numpy as np

from ...edits import GraphEditor
from ...ir import Graph
from .. import Match
from .common import Layer, Shared, bias_refusal, per_channel, write_layer


class FoldAffineAfter(Shared):
    """Layer -> affine node: the layer computes the affine node's output."""

    name = "fold affine after"

    def find(self, graph: Graph):
        scope = self.scope(graph)
        for node in graph.nodes:
            affine = scope.affine(node)
            if affine is None:
                continue
            layer = scope.layer_by_output.get(node.inputs[affine.input_slot])
            if layer is not None:
                yield Match(layer.nodes + (node.name,), (layer.node.name, affine))

    def _fold(self, graph: Graph, match: Match):
        scope = self.scope(graph)
        layer, affine = scope.layers[match.data[0]], match.data[1]
        channels = per_channel(affine, layer.form.out_axis, scope.shape(layer.output))
        if channels is None:
            return layer, None, "its constants vary along other axes than the layer's output channels"
        scale, shift = channels
        groups, matrix = layer.form.groups, layer.matrix()
        matrix = matrix * scale.reshape(groups, -1, 1)
        bias = layer.bias()
        bias = shift if bias is None else bias * scale + shift
        return layer, (matrix, bias), None

    def check(self, graph: Graph, match: Match) -> str | None:
        scope = self.scope(graph)
        layer, folded, reason = self._fold(graph, match)
        return reason or scope.floating(layer) or scope.private(layer.output, match.nodes[-1]) \
            or bias_refusal(layer, folded[1]) or scope.own_weights(layer, set(match.nodes))

    def rewrite(self, graph: Graph, match: Match, editor: GraphEditor) -> None:
        layer, (matrix, bias), _ = self._fold(graph, match)
        node = graph.node_by_name[match.nodes[-1]]
        write_layer(graph, editor, layer, matrix, bias, output=node.outputs[0])
        editor.remove_node(node.name, into=layer.node.name)


class FoldAffineBefore(Shared):
    """Affine node -> layers: every layer that reads the affine node's output reads its input
    instead (a norm's per-channel weight in front of the query, key and value projections)."""

    name = "fold affine before"

    def find(self, graph: Graph):
        scope = self.scope(graph)
        for node in graph.nodes:
            affine = scope.affine(node)
            if affine is None:
                continue
            layers = [scope.layers[r.name] for r in scope.readers(node.outputs[0]) if r.name in scope.layers
                      and scope.layers[r.name].input == node.outputs[0]]
            layers = list({layer.node.name: layer for layer in layers}.values())
            if layers:
                shape_readers = tuple(r.name for r in scope.shape_readers(node.outputs[0]))
                yield Match((node.name,) + sum((layer.nodes for layer in layers), ()) + shape_readers,
                            (tuple(layer.node.name for layer in layers), affine, shape_readers))

    def _fold(self, graph: Graph, layer: Layer, affine):
        form = layer.form
        channels = per_channel(affine, form.in_axis, self.scope(graph).shape(layer.input))
        if channels is None:
            return None, "its constants vary along other axes than the layer's input channels"
        scale, shift = channels
        if np.any(shift) and form.padded:
            return None, f"a shift before a zero-padded layer ({layer.node.name}) is not exact at its borders"
        groups, matrix = form.groups, layer.matrix()
        per_group = len(scale) // groups
        columns = np.arange(groups)[:, None] * per_group + np.asarray(form.k_channel)[None, :]  # [g, K]
        folded = matrix * scale[columns][:, None, :]
        added = np.einsum("gok,gk->go", matrix, shift[columns]).reshape(-1)
        bias = layer.bias()
        return (folded, added if bias is None else bias + added), None

    def check(self, graph: Graph, match: Match) -> str | None:
        scope = self.scope(graph)
        node, (names, affine, shape_readers) = graph.node_by_name[match.nodes[0]], match.data
        tensor = node.outputs[0]
        if tensor in graph.graph_output_names:
            return f"tensor {tensor} is a graph output"
        others = sorted({r.name for r in scope.readers(tensor)} - set(names) - set(shape_readers))
        if others:
            return f"tensor {tensor} is also read by {', '.join(others[:3])}, which are no layers"
        for name in names:
            layer = scope.layers[name]
            folded, reason = self._fold(graph, layer, affine)
            if layer.node.inputs.count(tensor) > 1:
                reason = f"{name} reads {tensor} twice"
            reason = reason or scope.floating(layer) or bias_refusal(layer, folded[1]) \
                or scope.own_weights(layer, set(match.nodes))
            if reason:
                return reason
        return None

    def rewrite(self, graph: Graph, match: Match, editor: GraphEditor) -> None:
        scope, node, (names, affine, shape_readers) = self.scope(graph), graph.node_by_name[match.nodes[0]], match.data
        source = node.inputs[affine.input_slot]
        for name in names:
            (matrix, bias), _ = self._fold(graph, scope.layers[name], affine)
            write_layer(graph, editor, scope.layers[name], matrix, bias, input=source)
        for name in shape_readers:  # the affine node's input has the same shape
            reader = copy.copy(graph.node_by_name[name])
            reader.inputs = [source if t == node.outputs[0] else t for t in reader.inputs]
            editor.replace_node(name, reader)
        editor.remove_node(node.name, into=names[0])


__all__ = ["FoldAffineAfter", "FoldAffineBefore"]
