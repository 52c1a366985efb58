"""Merge two linear layers in a row, with nothing between them, into one.

``W2 (W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2)``. The merged layer keeps the geometry
of the layer that has one: a convolution followed by a pointwise layer (a 1x1 conv, a
dense layer) becomes that convolution; a pointwise layer followed by a convolution
becomes that convolution, exact only where the convolution pads nothing or ``b1`` is zero
(its zero padding would otherwise meet ``b1``). Only ungrouped layers merge, and only
where the merged layer costs no more multiply-adds than the two did (merging a
bottleneck, or a depthwise conv into the 1x1 after it, would cost more).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...edits import GraphEditor
from ...ir import Graph
from .. import Match
from .common import Layer, Scope, Shared, bias_refusal, write_layer


@dataclass(frozen=True)
class Merge:
    keep: Layer  # the layer whose geometry the merged one has
    matrix: np.ndarray
    bias: np.ndarray | None
    input: str | None  # where the kept layer reads from now (None: as before)
    output: str | None  # the tensor the kept layer writes now (None: as before)


class MergeConsecutive(Shared):
    name = "merge consecutive"

    def find(self, graph: Graph):
        scope = self.scope(graph)
        for second in scope.layers.values():
            first = scope.layer_by_output.get(second.input)
            if first is not None and first is not second:
                yield Match(first.nodes + second.nodes, (first.node.name, second.node.name))

    def _merge(self, graph: Graph, match: Match) -> Merge | str:
        scope = self.scope(graph)
        first, second = (scope.layers[name] for name in match.data)
        reason = scope.floating(first, second) or scope.private(first.output, second.node.name)
        if reason:
            return reason
        if first.form.groups != 1 or second.form.groups != 1:
            return "grouped layers do not merge"
        if first.form.out_axis != second.form.in_axis:
            return "the layers' channel axes differ"
        candidates = []
        if second.pointwise:
            candidates.append(_into_first(scope, first, second))
        if first.pointwise:
            candidates.append(_into_second(scope, first, second))
        if not candidates:
            return "neither layer is pointwise (1x1, stride 1, unpadded, or dense)"
        reasons = []
        for merge in candidates:  # the first that passes every check
            if isinstance(merge, str):
                reasons.append(merge)
                continue
            reason = bias_refusal(merge.keep, merge.bias) or scope.own_weights(merge.keep, set(match.nodes))
            if reason is None:
                return merge
            reasons.append(reason)
        return reasons[0]

    def check(self, graph: Graph, match: Match) -> str | None:
        merge = self._merge(graph, match)
        return merge if isinstance(merge, str) else None

    def rewrite(self, graph: Graph, match: Match, editor: GraphEditor) -> None:
        merge = self._merge(graph, match)
        write_layer(graph, editor, merge.keep, merge.matrix, merge.bias, output=merge.output, input=merge.input)
        for name in match.nodes:  # the other layer's nodes: their tensors are gone with them
            if name not in merge.keep.nodes:
                editor.remove_node(name, into=merge.keep.node.name)


def _costs(scope: Scope, first: Layer, second: Layer, merged_per_row: int, merged_rows: int | None) -> str | None:
    rows1, rows2 = scope.rows(first), scope.rows(second)
    if rows1 is None or rows2 is None or merged_rows is None:
        return "input shapes unknown"
    before = rows1 * first.form.matrix().size + rows2 * second.form.matrix().size
    after = merged_rows * merged_per_row
    return f"the merged layer would cost more multiply-adds ({after} > {before})" if after > before else None


def _into_first(scope: Scope, first: Layer, second: Layer) -> Merge | str:
    """A pointwise layer after any layer: the first layer's geometry, the second's outputs."""
    w1, w2 = first.matrix()[0], second.matrix()[0]  # [O1, K1], [O2, O1]
    matrix = (w2 @ w1)[None]
    reason = _costs(scope, first, second, matrix.size, scope.rows(first))
    if reason:
        return reason
    b1, b2 = first.bias(), second.bias()
    bias = None if b1 is None and b2 is None else \
        (w2 @ b1 if b1 is not None else 0.0) + (b2 if b2 is not None else 0.0)
    return Merge(first, matrix, bias, None, second.output)


def _into_second(scope: Scope, first: Layer, second: Layer) -> Merge | str:
    """A pointwise layer before any layer: the second layer's geometry, reading the first's input."""
    form = second.form
    if first.form.in_axis != form.in_axis:
        return "the layers' channel axes differ"
    if form.displacements is None:
        return f"{second.node.name}'s geometry is unknown (input shape?)"
    b1 = first.bias()
    if b1 is not None and np.any(b1) and form.padded:
        return "a bias before a zero-padded layer is not exact at its borders"
    taps, w1 = second.taps(), first.matrix()[0]  # [O1, C]
    n_in = w1.shape[0]
    if not np.array_equal(np.asarray(form.k_channel) * taps + np.asarray(form.k_offset), np.arange(n_in * taps)):
        return f"{second.node.name}'s columns are not laid out channel by channel"
    w2 = second.matrix()[0].reshape(-1, n_in, taps)  # [O2, O1, taps]
    matrix = np.einsum("oat,ac->oct", w2, w1).reshape(1, w2.shape[0], -1)
    reason = _costs(scope, first, second, matrix.size, scope.rows(second))
    if reason:
        return reason
    b2 = second.bias()
    bias = None if b1 is None and b2 is None else \
        (np.einsum("oat,a->o", w2, b1) if b1 is not None else 0.0) + (b2 if b2 is not None else 0.0)
    return Merge(second, matrix, bias, first.input, None)
