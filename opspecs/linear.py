"""Gemm and MatMul: the reduced (K) axis and the output (N) axis prune independently.

Both have a matrix view (:class:`GemmForm`, :class:`MatMulForm`) for recovery
and data-driven criteria when the weight is a constant. MatMul has no bias
input; a constant Add right after it (how exporters write a linear layer) is
taken as its bias, otherwise recovery fits it without an intercept.
"""
from __future__ import annotations

import numpy as np

from onnxprune.ir import Node
from onnxprune.rules import IN, OUT, Barrier, Couple, Layer, LayerKind, Mark, NodeView, OpSpec, Trait, Updates

from ._common import broadcast, couple_by_labels, unknown_shape


def _couple_gemm(view: NodeView, port, axes):
    k_a = 0 if view.attr("transA", 0) else 1
    k_b, n_b = (1, 0) if view.attr("transB", 0) else (0, 1)
    if port == IN(0) and axes == (k_a,):
        return [Couple(IN(1), (k_b,))]
    if port == IN(1) and axes == (k_b,):
        return [Couple(IN(0), (k_a,))]
    if port == IN(1) and axes == (n_b,):
        return [Couple(OUT(0), (1,))]
    if port == OUT(0) and axes == (1,):
        links = [Couple(IN(1), (n_b,))]
        if view.has_input(2):
            bias = broadcast(view, OUT(0), (1,), inputs=[2])
            if not isinstance(bias, list):
                return bias
            links += bias
        return links
    if port == IN(2):
        return broadcast(view, port, axes, inputs=[2])
    return Barrier(f"Gemm cannot prune axes {axes} of {port} (rows)")


def _matmul_labels(rank: int, out_rank: int, first: bool) -> list:
    """What each axis of an operand (or the output) is: ("batch", output axis), "row", "k" or "col"."""
    if first is None:  # the output
        return [("batch", a) for a in range(rank - 2)] + ["row", "col"]
    tail = ["row", "k"] if first else ["k", "col"]
    return [("batch", a + out_rank - rank) for a in range(rank - 2)] + tail


def _couple_matmul(view: NodeView, port, axes):
    """numpy matmul: batch axes broadcast, rows of A go to rows of Y, columns of B to columns of Y,
    A's last and B's second-to-last axes are contracted together. Any set of axes of one operand
    couples to the axes of the others that carry the same meaning (batched attention couples the
    head axis of Q, K and the scores; the contracted head_dim of Q and K drops out of the scores)."""
    ranks = {IN(0): view.rank(IN(0)), IN(1): view.rank(IN(1)), OUT(0): view.rank(OUT(0))}
    if None in ranks.values():
        return unknown_shape(view, OUT(0))
    if ranks[IN(0)] < 2 or ranks[IN(1)] < 2:
        return Barrier("MatMul with a vector operand")
    shapes = {p: view.shape(p) for p in ranks}
    if port not in shapes or shapes[port] is None or any(s is None for s in shapes.values()):
        return unknown_shape(view, port)
    ry = ranks[OUT(0)]
    labels = {IN(0): _matmul_labels(ranks[IN(0)], ry, True), IN(1): _matmul_labels(ranks[IN(1)], ry, False),
              OUT(0): _matmul_labels(ry, ry, None)}
    links = couple_by_labels(port, axes, labels, shapes, "MatMul")
    if not isinstance(links, list):
        return links
    mine = [labels[port][a] for a in axes]
    if not view.from_constants(0) and not view.from_constants(1) and any(isinstance(label, tuple) for label in mine):
        links.append(Mark(Trait.HEADS, "batch axis of a matmul between two activations"))
    return links


def _roots_if_const_weight(view: NodeView):
    if not view.from_constants(1):  # a constant, or one behind a DequantizeLinear / Transpose / Cast
        return []
    rank = view.rank(OUT(0))
    return [(OUT(0), (rank - 1,))] if rank else []


def _macs_gemm(view: NodeView) -> int:
    a, y = view.shape(IN(0)), view.shape(OUT(0))
    if a is None or y is None:
        return 0
    k = a[0] if view.attr("transA", 0) else a[1]
    return int(np.prod(y)) * int(k)


def _macs_matmul(view: NodeView) -> int:
    a, y = view.shape(IN(0)), view.shape(OUT(0))
    if a is None or y is None:
        return 0
    return int(np.prod(y)) * int(a[-1])


class _Dense:
    """Shared by Gemm and MatMul: one group, each column one input feature."""

    input_slot, groups = 0, 1
    strides: tuple[int, ...] = ()
    displacements = np.zeros((1, 0), dtype=np.int64)  # one tap, no spatial axes
    padded = False
    pads: tuple[tuple[int, int], ...] = ()

    def _columns(self, k: int) -> None:
        self.k_channel = np.arange(k)
        self.k_offset = np.zeros(k, dtype=np.int64)


def _no_geometry(geometry) -> None:
    if geometry is not None:
        raise ValueError("a dense layer has no kernel grid to change")


class GemmForm(_Dense):
    """Y = alpha * A' @ B' + beta * C: matrix alpha * B'^T, bias beta * C (a row vector)."""

    out_axis, can_add_bias = 1, True

    def __init__(self, view: NodeView):
        self.view = view
        self.trans_a, self.trans_b = bool(view.attr("transA", 0)), bool(view.attr("transB", 0))
        self.alpha, self.beta = float(view.attr("alpha", 1.0)), float(view.attr("beta", 1.0))
        self.weight = view.const(1)
        self.in_axis = 0 if self.trans_a else 1
        self.output = view.tensor(OUT(0))
        self._columns(self.weight.shape[1 if self.trans_b else 0])

    def n_rows(self, x_shape) -> int:
        return int(x_shape[1] if self.trans_a else x_shape[0])

    def unfold(self, x, rows=None):
        a = x.T if self.trans_a else x
        return (a if rows is None else a[rows])[:, None, :]

    def out_rows(self, y):
        return y

    def matrix(self):
        b = self.weight.T if self.trans_b else self.weight  # [K, N]
        return (self.alpha * b.T)[None]

    def bias(self):
        c = self.view.const(2) if self.view.has_input(2) else None
        if c is None or self.beta == 0:
            return None
        n = self.weight.shape[0 if self.trans_b else 1]
        return self.beta * np.broadcast_to(c.reshape(-1) if c.size == n else c.reshape(()), (n,))

    def store(self, matrix, bias, geometry=None) -> Updates:
        _no_geometry(geometry)
        b = matrix[0].T / self.alpha  # [K, N]
        updates = Updates(inputs={1: (b.T if self.trans_b else b).astype(self.weight.dtype)})
        if bias is not None:
            bias = np.asarray(bias, dtype=self.weight.dtype).reshape(-1)
            c = self.view.const(2) if self.view.has_input(2) else None
            if c is not None and self.beta != 0 and c.size == bias.size:
                updates.inputs[2] = (bias / self.beta).reshape(c.shape).astype(self.weight.dtype)
            else:
                updates.inputs[2] = bias
                updates.attrs["beta"] = 1.0
        return updates


class MatMulForm(_Dense):
    """X[..., K] @ W[K, N], plus a constant bias if a lone Add follows: every leading position is a row.

    Exporters write a linear layer as MatMul then ``Add(bias, .)``; the Add is part of the
    layer here (``output`` is its result), so recovery fits an intercept and writes it back
    into the Add's constant. A MatMul without such an Add has no bias and cannot take one.
    """

    def __init__(self, view: NodeView, bias_add: tuple[Node, int] | None = None):
        self.view, self.bias_add = view, bias_add
        self.weight = view.const(1)
        self.in_axis = view.rank(IN(0)) - 1
        self.out_axis = view.rank(OUT(0)) - 1
        self.output = bias_add[0].outputs[0] if bias_add else view.tensor(OUT(0))
        self.can_add_bias = bias_add is not None
        self._columns(self.weight.shape[0])

    def n_rows(self, x_shape) -> int:
        return int(np.prod(x_shape[:-1]))

    def unfold(self, x, rows=None):
        a = x.reshape(-1, x.shape[-1])
        return (a if rows is None else a[rows])[:, None, :]

    def out_rows(self, y):
        return y.reshape(-1, y.shape[-1])

    def matrix(self):
        return self.weight.T[None]

    def _bias_const(self) -> np.ndarray | None:
        if self.bias_add is None:
            return None
        add, slot = self.bias_add
        return self.view.graph.params[add.inputs[slot]]

    def bias(self):
        c = self._bias_const()
        return None if c is None else np.broadcast_to(c.reshape(-1), (self.weight.shape[1],))

    def store(self, matrix, bias, geometry=None) -> Updates:
        _no_geometry(geometry)
        updates = Updates(inputs={1: matrix[0].T.astype(self.weight.dtype)})
        if bias is not None:
            if self.bias_add is None:
                raise ValueError("MatMul has no bias input")
            add, slot = self.bias_add
            c = self._bias_const()
            value = np.asarray(bias, dtype=c.dtype).reshape(c.shape[:-1] + (-1,))
            updates.others[add.name] = Updates(inputs={slot: value})
        return updates


def _bias_add(view: NodeView) -> tuple[Node, int] | None:
    """(Add node, slot of its constant) when the MatMul's output goes only to an Add of a constant
    row vector over the output columns: the layer's bias."""
    out = view.tensor(OUT(0))
    readers = view.graph.consumers.get(out, [])
    if len(readers) != 1 or out in view.graph.graph_output_names:
        return None
    add, slot = readers[0]
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.inputs) != 2:
        return None
    other = 1 - slot
    c = view.graph.params.get(add.inputs[other])
    n, rank = view.const(1).shape[1], view.rank(OUT(0))
    if c is None or c.size != n or c.ndim > rank or c.shape[-1] != n or not np.issubdtype(c.dtype, np.floating):
        return None
    return add, other


def _gemm_form(view: NodeView):
    """Constant 2D weight; C (if any) a constant row vector or scalar, not per-row values."""
    weight, c = view.const(1), view.const(2) if view.has_input(2) else None
    if weight is None or weight.ndim != 2 or float(view.attr("alpha", 1.0)) == 0:
        return None
    if view.has_input(2) and (c is None or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2):
        return None
    return GemmForm(view)


def _matmul_form(view: NodeView):
    weight, rank = view.const(1), view.rank(IN(0))
    if weight is None or weight.ndim != 2 or rank is None or rank < 2:
        return None
    return MatMulForm(view, _bias_add(view))


def _layer(view: NodeView) -> Layer | None:
    """A matrix product with a constant weight (the activation's K and the output's N are its widths);
    a product of two activations (attention scores) is no such layer."""
    return Layer(LayerKind.GEMM) if view.from_constants(1) and not view.from_constants(0) else None


def register(registry) -> None:
    registry.register(OpSpec(("Gemm",), _couple_gemm, roots=_roots_if_const_weight,
                             macs=_macs_gemm, linear=_gemm_form, layer=_layer, family="linear"))
    registry.register(OpSpec(("MatMul",), _couple_matmul, roots=_roots_if_const_weight,
                             macs=_macs_matmul, linear=_matmul_form, layer=_layer, family="linear"))
