"""com.microsoft MatMulNBits: ``Y = A @ dequantize(B)^T (+ bias)`` with B's codes (2, 4 or 8 bits) quantized in
blocks of ``block_size`` along K, packed low bits first, as LLM exporters write int4 weights.

B is stored ``[N, k_blocks, blob_size]`` (one blob per block of one column); ``scales`` and
``zero_points`` hold one value per (column, block), flattened (zero points packed like the codes).

* N (output columns): B's rows and the bias; each column's scales and zero points go with it.
* K (A's last axis): only in whole blocks (a block shares its scale and zero point): the group's
  channels are blocks of ``block_size`` channels, B's blobs go whole, no code moves within a byte.
  A partial last block (K not a multiple of block_size) or an act-order ``g_idx`` (channels assigned
  to blocks out of order) is a barrier.

The scales and zero points are rewritten (sliced per column and block, zero points re-packed) with
``K`` and ``N``; no rule couples them on their own. Scored on the dequantized weights; a removed
channel masks to codes at its block's zero point (exactly 0 after dequantization).
"""
from __future__ import annotations

import numpy as np

from onnxprune.mapping import Overlap
from onnxprune.rules import IN, OUT, QUANT_PARAM, Barrier, Couple, Layer, LayerKind, NodeView, OpSpec, Stored, Updates

from ._common import unknown_shape

MS = "com.microsoft"
A, B, SCALES, ZERO, G_IDX, BIAS = (IN(i) for i in range(6))


def _attrs(view: NodeView) -> tuple[int, int, int, int]:
    return int(view.attr("K")), int(view.attr("N")), int(view.attr("bits", 4)), int(view.attr("block_size"))


def _layout_barrier(view: NodeView) -> Barrier | None:
    """Why the node's tensors cannot be rewritten at all (non-constant or odd layouts), else None."""
    k, n, bits, block = _attrs(view)
    if 8 % bits:
        return Barrier(f"{bits}-bit codes straddle bytes")
    b = view.const(1)
    if b is None or b.ndim != 3 or b.shape[0] != n or b.shape[2] * 8 != block * bits:
        return Barrier("B is not a constant [N, k_blocks, blob_size]")
    scales = view.const(2)
    if scales is None or scales.size != n * b.shape[1]:
        return Barrier("scales are not constant, one per column and block")
    if view.has_input(3) and view.const(3) is None:
        return Barrier("zero points computed at run time")
    return None


def _k_barrier(view: NodeView) -> Barrier | None:
    k, _, bits, block = _attrs(view)
    if view.has_input(4):
        return Barrier("g_idx (act-order) assigns K channels to blocks out of order")
    if k % block:
        return Barrier(f"K = {k} is not a multiple of block_size {block}: the last block is partial")
    return None


def couple(view: NodeView, port, axes):
    barrier = _layout_barrier(view)
    if barrier is not None:
        return barrier
    rank, out_rank = view.rank(A), view.rank(OUT(0))
    if rank is None or out_rank is None:
        return unknown_shape(view, A)
    axes = tuple(axes)
    columns = [(B, (0,)), (OUT(0), (out_rank - 1,))] + ([(BIAS, (0,))] if view.has_input(5) else [])
    if (port, axes) in columns:
        return [Couple(p, a) for p, a in columns if p != port]
    block = _attrs(view)[3]
    if (port, axes) == (A, (rank - 1,)):
        return _k_barrier(view) or [Couple(B, (1,), Overlap(1, block))]
    if (port, axes) == (B, (1,)):
        return _k_barrier(view) or [Couple(A, (rank - 1,), Overlap(block, 1))]
    if port in (SCALES, ZERO, G_IDX):
        return Barrier("per-block scales, zero points and g_idx are rewritten with B, never pruned on their own")
    return Barrier(f"MatMulNBits {port} axes {list(axes)} are rows (batch, sequence) or a blob's bytes")


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Codes of the bytes along the last axis (low bits first), the first ``count`` of them."""
    per = 8 // bits
    shifts = (np.arange(per) * bits).astype(np.uint8)
    unpacked = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return unpacked.reshape(*packed.shape[:-1], -1)[..., :count].astype(np.uint8)


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes along the last axis into bytes (low bits first), the last byte padded with zeros."""
    per = 8 // bits
    pad = (-codes.shape[-1]) % per
    codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (pad,), np.uint8)], axis=-1)
    grouped = codes.reshape(*codes.shape[:-1], -1, per).astype(np.uint32)
    return (grouped << (np.arange(per, dtype=np.uint32) * bits)).sum(axis=-1).astype(np.uint8)


def _zero_grid(view: NodeView, n: int, blocks: int) -> np.ndarray:
    """Zero points as [N, k_blocks] (uint8 codes, packed per column; or floats); the default is the middle code."""
    bits = _attrs(view)[2]
    if not view.has_input(3):
        return np.full((n, blocks), 1 << (bits - 1), np.uint8)
    zero = view.const(3)
    if zero.dtype == np.uint8:
        return _unpack(zero.reshape(n, -1), bits, blocks)
    return zero.reshape(n, blocks)


def rewrite(view: NodeView, changes) -> Updates:
    _, n, bits, block = _attrs(view)
    blocks = view.const(1).shape[1]
    kept = changes[B].kept if B in changes else {}
    rows, cols = kept.get(0, np.arange(n)), kept.get(1, np.arange(blocks))
    if len(rows) == n and len(cols) == blocks:
        return Updates()
    scales = view.const(2)
    grid = scales.reshape(n, blocks)[np.ix_(rows, cols)]
    inputs = {2: grid.reshape(-1) if scales.ndim == 1 else grid}
    if view.has_input(3):
        zero = view.const(3)
        sliced = _zero_grid(view, n, blocks)[np.ix_(rows, cols)]
        if zero.dtype == np.uint8:
            inputs[3] = _pack(sliced, bits).reshape(-1)
        else:
            inputs[3] = sliced.reshape(-1) if zero.ndim == 1 else sliced
    return Updates(attrs={"N": int(len(rows)), "K": int(len(cols) * block)}, inputs=inputs)


def stored(view: NodeView, slot: int) -> Stored | None:
    """B as [N, k_blocks, block_size] dequantized values; its zero: every code at its block's zero point."""
    if slot != 1 or _layout_barrier(view) is not None:
        return None
    _, n, bits, block = _attrs(view)
    b = view.const(1)
    zero = _zero_grid(view, n, b.shape[1])
    if zero.dtype != np.uint8:  # float zero points need not be a code
        return None
    scales = view.const(2).reshape(n, b.shape[1]).astype(np.float32)
    real = (_unpack(b, bits, block).astype(np.float32) - zero[..., None]) * scales[..., None]
    zero_codes = np.broadcast_to(zero[..., None], b.shape[:2] + (block,))
    return Stored(real.astype(np.float32), _pack(np.ascontiguousarray(zero_codes), bits))


def _roots(view: NodeView):
    rank = view.rank(OUT(0))
    return [(OUT(0), (rank - 1,))] if rank and view.const(1) is not None else []


def _macs(view: NodeView) -> int:
    y = view.shape(OUT(0))
    return int(np.prod(y)) * int(view.attr("K")) if y is not None else 0


def _layer(view: NodeView) -> Layer | None:
    return Layer(LayerKind.GEMM) if view.const(1) is not None else None


def _weight_elements(view: NodeView, slot: int) -> int | None:
    """B packs the K x N weight (padded to whole blocks): K * N parameters."""
    return int(view.attr("K")) * int(view.attr("N")) if slot == 1 else None


def register(registry) -> None:
    registry.register(OpSpec(("MatMulNBits",), couple, domain=MS, roots=_roots, rewrite=rewrite, macs=_macs,
                             param_roles={2: QUANT_PARAM, 3: QUANT_PARAM, 4: QUANT_PARAM}, stored=stored,
                             weight_elements=_weight_elements, layer=_layer, family="nbits"))
