"""Gemm and MatMul: the reduced (K) axis and the output (N) axis prune independently."""
from __future__ import annotations

import numpy as np

from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec

from ._common import broadcast, unknown_shape


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


def _couple_matmul(view: NodeView, port, axes):
    ra, rb, ry = view.rank(IN(0)), view.rank(IN(1)), view.rank(OUT(0))
    if None in (ra, rb, ry):
        return unknown_shape(view, OUT(0))
    if ra < 2 or rb < 2:
        return Barrier("MatMul with a vector operand")
    if port == IN(0) and axes == (ra - 1,):
        return [Couple(IN(1), (rb - 2,))]
    if port == IN(1) and axes == (rb - 2,):
        return [Couple(IN(0), (ra - 1,))]
    if port == IN(1) and axes == (rb - 1,):
        return [Couple(OUT(0), (ry - 1,))]
    if port == OUT(0) and axes == (ry - 1,):
        return [Couple(IN(1), (rb - 1,))]
    # rows of A map to rows of Y when B has no batch axes to broadcast against
    if rb == 2 and port == IN(0) and max(axes) < ra - 1:
        return [Couple(OUT(0), tuple(a + ry - ra for a in axes))]
    if rb == 2 and port == OUT(0) and max(axes) < ry - 1:
        return [Couple(IN(0), tuple(a - (ry - ra) for a in axes))]
    return Barrier(f"MatMul cannot prune axes {axes} of {port}")


def _roots_if_const_weight(view: NodeView):
    if view.const(1) is None:
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


def register(registry) -> None:
    registry.register(OpSpec(("Gemm",), _couple_gemm, roots=_roots_if_const_weight,
                             macs=_macs_gemm, family="linear"))
    registry.register(OpSpec(("MatMul",), _couple_matmul, roots=_roots_if_const_weight,
                             macs=_macs_matmul, family="linear"))
