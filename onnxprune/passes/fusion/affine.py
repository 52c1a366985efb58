"""Fold an affine node (x * scale + shift per channel: BatchNorm in inference, Mul/Add by a
constant) into the linear layer next to it.

After the layer it is always exact: ``s * (W x + b) + t = (s W) x + (s b + t)``. Before
it, ``W (s x + t) + b = (W s) x + (W t + b)`` holds wherever the layer reads the input;
a zero-padded convolution also reads zeros outside it, where the shift ``t`` never was,
so a shift before one is refused.
"""
from __future__ import annotations

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
    """Affine node -> layer: the layer reads the affine node's input."""

    name = "fold affine before"

    def find(self, graph: Graph):
        scope = self.scope(graph)
        for node in graph.nodes:
            affine = scope.affine(node)
            if affine is None:
                continue
            for reader in scope.readers(node.outputs[0]):
                layer = scope.layers.get(reader.name)
                if layer is not None and layer.input == node.outputs[0]:
                    yield Match((node.name,) + layer.nodes, (layer.node.name, affine))

    def _fold(self, graph: Graph, match: Match):
        scope = self.scope(graph)
        layer, affine = scope.layers[match.data[0]], match.data[1]
        form = layer.form
        channels = per_channel(affine, form.in_axis, scope.shape(layer.input))
        if channels is None:
            return layer, None, "its constants vary along other axes than the layer's input channels"
        scale, shift = channels
        if np.any(shift) and form.padded:
            return layer, None, "a shift before a zero-padded layer is not exact at its borders"
        groups, matrix = form.groups, layer.matrix()
        per_group = len(scale) // groups
        columns = np.arange(groups)[:, None] * per_group + np.asarray(form.k_channel)[None, :]  # [g, K]
        folded = matrix * scale[columns][:, None, :]
        added = np.einsum("gok,gk->go", matrix, shift[columns]).reshape(-1)
        bias = layer.bias()
        bias = added if bias is None else bias + added
        return layer, (folded, bias), None

    def check(self, graph: Graph, match: Match) -> str | None:
        scope = self.scope(graph)
        layer, folded, reason = self._fold(graph, match)
        node = graph.node_by_name[match.nodes[0]]
        if reason is None and layer.node.inputs.count(node.outputs[0]) > 1:
            reason = f"{layer.node.name} reads {node.outputs[0]} twice"
        return reason or scope.floating(layer) or scope.private(node.outputs[0], layer.node.name) \
            or bias_refusal(layer, folded[1]) or scope.own_weights(layer, set(match.nodes))

    def rewrite(self, graph: Graph, match: Match, editor: GraphEditor) -> None:
        layer, (matrix, bias), _ = self._fold(graph, match)
        node = graph.node_by_name[match.nodes[0]]
        write_layer(graph, editor, layer, matrix, bias, input=node.inputs[self.scope(graph).affine(node).input_slot])
        editor.remove_node(node.name, into=layer.node.name)


__all__ = ["FoldAffineAfter", "FoldAffineBefore", "Layer"]
