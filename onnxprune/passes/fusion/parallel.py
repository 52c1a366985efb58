"""Merge parallel branches that read the same tensor and are summed (RepVGG-style
re-parameterization): ``W_a x + b_a + W_b x + b_b = (W_a + W_b) x + (b_a + b_b)``.

A branch is a linear layer, the input itself (identity: a kernel with one at its centre)
or an affine node of the input (identity scaled per channel: a BatchNorm on the skip
path). Two layers merge where one's kernel taps are among the other's (a 1x1 at the
centre of a 3x3 with the same stride and output grid); the merged layer has the larger
kernel. Branches with batch norms merge after those folded into them, so a
``3x3+BN``, ``1x1+BN``, ``BN`` block becomes one 3x3 in three rewrites.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ...edits import GraphEditor
from ...ir import Graph, Node
from .. import Match
from .common import Layer, Scope, Shared, bias_refusal, by_tap, columns_refusal, per_channel, write_layer


@dataclass(frozen=True)
class Pair:
    """A sum of a layer and a second branch on the layer's input."""

    sum: str
    slots: tuple[int, int]  # the sum's inputs the two branches are (the layer's first)
    layer: str  # main node of the layer branch
    other: str | None  # main node of a second layer
    affine: str | None  # an affine node on the input (the other branch), else identity


class MergeParallel(Shared):
    name = "merge parallel"

    def find(self, graph: Graph):
        scope = self.scope(graph)
        for node in graph.nodes:
            spec = scope.spec(node)
            if spec is None or not spec.sum_of_inputs or len(node.inputs) < 2 \
                    or len(set(node.inputs)) != len(node.inputs) or not all(node.inputs):
                continue
            shapes = [scope.shape(t) for t in (*node.inputs, node.outputs[0])]
            if None in shapes or len({tuple(s) for s in shapes}) != 1:
                continue
            pair = _pair(scope, node)
            if pair is not None:
                extra = scope.layers[pair.other].nodes if pair.other else (pair.affine,) if pair.affine else ()
                yield Match((node.name,) + scope.layers[pair.layer].nodes + extra, pair)

    def _merge(self, graph: Graph, match: Match):
        scope, pair = self.scope(graph), match.data
        layer = scope.layers[pair.layer]
        reason = scope.floating(layer) or scope.private(layer.output, pair.sum) or columns_refusal(layer)
        if reason:
            return reason
        if pair.other is not None:
            other = scope.layers[pair.other]
            reason = scope.floating(layer, other) or scope.private(other.output, pair.sum) or columns_refusal(other)
            merged = reason or _two_layers(layer, other)
        else:
            merged = _identity(scope, layer, graph.node_by_name[pair.affine] if pair.affine else None, pair.sum)
        if isinstance(merged, str):
            return merged
        keep, matrix, bias = merged
        return bias_refusal(keep, bias) or scope.own_weights(keep, set(match.nodes)) or merged

    def check(self, graph: Graph, match: Match) -> str | None:
        merged = self._merge(graph, match)
        return merged if isinstance(merged, str) else None

    def rewrite(self, graph: Graph, match: Match, editor: GraphEditor) -> None:
        keep, matrix, bias = self._merge(graph, match)
        pair, join = match.data, graph.node_by_name[match.data.sum]
        if len(join.inputs) == 2:  # the merged layer computes the sum
            write_layer(graph, editor, keep, matrix, bias, output=join.outputs[0])
            gone = match.nodes
        else:  # the sum adds the merged layer (its output keeps its name, not its values) and the rest
            write_layer(graph, editor, keep, matrix, bias)
            editor.map_tensor(keep.output, None)
            new = copy.copy(join)
            new.inputs = [keep.output if slot == pair.slots[0] else t for slot, t in enumerate(join.inputs)
                          if slot != pair.slots[1]]
            editor.replace_node(join.name, new)
            gone = match.nodes[1:]
        for name in gone:
            if name not in keep.nodes:
                editor.remove_node(name, into=keep.node.name)


def _pair(scope: Scope, node: Node) -> Pair | None:
    """The first two of the sum's inputs that merge: a layer and a second layer on its input, the
    input itself, or an affine node of it."""
    inputs = node.inputs
    for i, first in enumerate(inputs):
        layer = scope.layer_by_output.get(first)
        if layer is None:
            continue
        for j, second in enumerate(inputs):
            if j == i:
                continue
            other = scope.layer_by_output.get(second)
            if other is not None and other.input == layer.input and other is not layer:
                return Pair(node.name, (i, j), layer.node.name, other.node.name, None)
            if second == layer.input:
                return Pair(node.name, (i, j), layer.node.name, None, None)
            produced = scope.graph.producers.get(second)
            affine = scope.affine(produced[0]) if produced else None
            if affine is not None and produced[0].inputs[affine.input_slot] == layer.input:
                return Pair(node.name, (i, j), layer.node.name, None, produced[0].name)
    return None


def _two_layers(a: Layer, b: Layer):
    fa, fb = a.form, b.form
    if fa.groups != fb.groups or fa.in_axis != fb.in_axis or fa.out_axis != fb.out_axis:
        return "the branches differ in groups or channel axes"
    if tuple(fa.strides) != tuple(fb.strides):
        return "the branches differ in stride"
    ma, mb = by_tap(a), by_tap(b)
    if ma.shape[:3] != mb.shape[:3]:
        return "the branches differ in channels"
    for big, small, m_big, m_small in ((a, b, ma, mb), (b, a, mb, ma)):
        where = _taps_in(big.form.displacements, small.form.displacements)
        if where is not None:
            merged = m_big.copy()
            merged[..., where] += m_small
            bias = _sum(big.bias(), small.bias())
            return big, merged.reshape(merged.shape[0], merged.shape[1], -1), bias
    return "neither kernel's taps are among the other's (kernel sizes, padding or dilation differ)"


def _identity(scope: Scope, layer: Layer, affine_node: Node | None, sum_node: str):
    form = layer.form
    if form.in_axis != form.out_axis or any(s != 1 for s in form.strides):
        return "the skip path does not line up with the layer's output (stride or axes)"
    centre = _taps_in(form.displacements, np.zeros((1, form.displacements.shape[1]), dtype=np.int64))
    if centre is None:
        return "the layer's kernel has no centre tap (its output is shifted against its input)"
    m = by_tap(layer)
    groups, per_out, per_in, _ = m.shape
    if per_out != per_in:
        return "the layer's inputs and outputs per group differ"
    channels = groups * per_in
    scale, shift = np.ones(channels), np.zeros(channels)
    if affine_node is not None:
        reason = scope.private(affine_node.outputs[0], sum_node)
        if reason:
            return reason
        found = per_channel(scope.affine(affine_node), form.in_axis, scope.shape(layer.input))
        if found is None:
            return "the skip path's constants vary along other axes than the channels"
        scale, shift = found
    merged = m.copy()
    index = np.arange(per_in)
    merged[:, index, index, centre[0]] += scale.reshape(groups, per_in)
    bias = _sum(layer.bias(), shift if np.any(shift) else None)
    return layer, merged.reshape(groups, per_out, -1), bias


def _taps_in(big: np.ndarray, small: np.ndarray) -> np.ndarray | None:
    """For each displacement of ``small``, the index of the same one in ``big`` (None: one is missing)."""
    if big is None or small is None or big.shape[1] != small.shape[1]:
        return None
    index = {tuple(d): t for t, d in enumerate(big.tolist())}
    found = [index.get(tuple(d)) for d in small.tolist()]
    return None if any(t is None for t in found) else np.asarray(found, dtype=np.int64)


def _sum(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None or b is None:
        return a if b is None else b
    return a + b
