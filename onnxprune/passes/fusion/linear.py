"""Merge two linear layers in a row, with nothing between them, into one.

``W2 (W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2)``. Where one layer is pointwise (a 1x1
conv, a dense layer) the merged layer keeps the geometry of the other: a convolution
followed by a pointwise layer becomes that convolution; a pointwise layer followed by a
convolution becomes that convolution, exact only where the convolution pads nothing or
``b1`` is zero (its zero padding would otherwise meet ``b1``). Two convolutions compose
into one whose kernel is the first's spread over the second's taps (3x3 then 3x3: one 5x5;
stride s1 * s2), with the same groups where both have them channel for channel
(depthwise then depthwise), exact where the second pads nothing: its zeros beyond the
first's output are not what the first computes there, so it keeps the first's padding.
Every merge must cost no more multiply-adds than the two layers did (a 3x3 then 3x3 of
equal widths would: 25 taps against 18; merging a bottleneck, or a depthwise conv into
the 1x1 after it, would too): refused for cost, with the figures.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...edits import GraphEditor
from ...ir import Graph
from .. import Match
from ...rules import Geometry
from .common import Layer, Scope, Shared, bias_refusal, by_tap, columns_refusal, write_layer


@dataclass(frozen=True)
class Merge:
    keep: Layer  # the layer whose geometry the merged one has
    matrix: np.ndarray
    bias: np.ndarray | None
    input: str | None  # where the kept layer reads from now (None: as before)
    output: str | None  # the tensor the kept layer writes now (None: as before)
    geometry: Geometry | None = None  # the kept layer's new kernel grid (None: as before)


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
        if first.form.out_axis != second.form.in_axis:
            return "the layers' channel axes differ"
        candidates = []  # cheapest first; each computed only if those before it are refused
        if first.form.groups == 1 and second.form.groups == 1:
            if second.pointwise:
                candidates.append(_into_first)
            if first.pointwise:
                candidates.append(_into_second)
        if len(first.form.strides) and len(second.form.strides):
            candidates.append(_composed)
        if not candidates:
            return "grouped layers merge only with a convolution of the same groups" \
                if first.form.groups != 1 or second.form.groups != 1 else \
                "neither layer is pointwise (1x1, stride 1, unpadded, or dense)"
        reasons = []
        for candidate in candidates:  # the first that passes every check
            merge = candidate(scope, first, second)
            if isinstance(merge, str):
                reasons.append(merge)
                continue
            reason = bias_refusal(merge.keep, merge.bias) or scope.own_weights(merge.keep, set(match.nodes))
            if reason is None:
                return merge
            reasons.append(reason)
        return "; ".join(dict.fromkeys(reasons))

    def check(self, graph: Graph, match: Match) -> str | None:
        merge = self._merge(graph, match)
        return merge if isinstance(merge, str) else None

    def rewrite(self, graph: Graph, match: Match, editor: GraphEditor) -> None:
        merge = self._merge(graph, match)
        write_layer(graph, editor, merge.keep, merge.matrix, merge.bias, output=merge.output, input=merge.input,
                    geometry=merge.geometry)
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
        return f"{second.node.name}'s rows read no known window of its input (input shape unknown, or no fixed window)"
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


def _composed(scope: Scope, first: Layer, second: Layer) -> Merge | str:
    """Two convolutions as one: output q of the second reads the first's output at
    ``q * s2 + D2[u]``, which reads the input at ``(q * s2 + D2[u]) * s1 + D1[t]``; so the merged
    kernel has a tap at ``s1 * D2[u] + D1[t]`` for every pair, stride ``s1 * s2`` and the first's
    padding (the second reads no padding: every position it reads is one the first computed)."""
    f1, f2 = first.form, second.form
    reason = columns_refusal(first) or columns_refusal(second)
    if reason:
        return reason
    if f1.displacements.shape[1] != f2.displacements.shape[1]:
        return "the layers' spatial axes differ"
    if f1.groups != f2.groups:
        return f"the layers' groups differ ({f1.groups} and {f2.groups})"
    if f2.padded:
        return f"{second.node.name} pads its input with zeros, where {first.node.name} would compute other values"
    if f1.pads is None:
        return f"{first.node.name}'s padding is unknown (input shape?)"
    m1, m2 = by_tap(first), by_tap(second)  # [G, O1, C, T1], [G, O2, O1, T2]
    if m2.shape[2] != m1.shape[1]:
        return "the layers' channels per group differ"
    s1 = np.asarray(f1.strides, dtype=np.int64)
    taps = ((s1 * f2.displacements)[:, None, :] + f1.displacements[None, :, :]).reshape(-1, len(s1))  # [T2*T1, n]
    low = taps.min(axis=0)
    if np.any(low > 0) or np.any(-low != np.asarray([b for b, _ in f1.pads])):
        return f"{first.node.name}'s kernel does not start at its padding"
    kernel = taps.max(axis=0) - low + 1
    size = m2.shape[0] * m2.shape[1] * m1.shape[2] * int(np.prod(kernel))  # before computing it: it may be large
    reason = _costs(scope, first, second, size, scope.rows(second))
    if reason:
        return reason
    place = np.zeros((len(taps), int(np.prod(kernel))))
    place[np.arange(len(taps)), np.ravel_multi_index(tuple((taps - low).T), tuple(kernel))] = 1.0
    w = np.einsum("goau,gact->gocut", m2, m1).reshape(m2.shape[0], m2.shape[1], m1.shape[2], -1) @ place
    matrix = w.reshape(w.shape[0], w.shape[1], -1)
    b1, b2 = first.bias(), second.bias()
    bias = None if b1 is None and b2 is None else \
        (np.einsum("goau,ga->go", m2, b1.reshape(m2.shape[0], -1)).reshape(-1) if b1 is not None else 0.0) \
        + (b2 if b2 is not None else 0.0)
    geometry = Geometry(tuple(int(k) for k in kernel), tuple(int(a) * int(b) for a, b in zip(f1.strides, f2.strides)),
                        tuple(f1.pads))
    return Merge(first, matrix, bias, None, second.output, geometry)
