"""im2col in numpy: a convolution's input patches as rows, for its matrix view.

Only the rows asked for are gathered (random output positions bound memory on
large feature maps); padding is applied once, as zeros, like the operator does.
"""
from __future__ import annotations

import math

import numpy as np


def conv_pads(in_sizes, kernel, strides, dilations, pads, auto_pad: str) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis, resolving ONNX's auto_pad modes."""
    n = len(in_sizes)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        result = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            result.append((small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small))
        return result
    if auto_pad == "VALID" or not pads:
        return [(0, 0)] * n
    return [(int(pads[i]), int(pads[i + n])) for i in range(n)]


def out_sizes(in_sizes, kernel, strides, dilations, pads) -> list[int]:
    return [(size + b + e - ((k - 1) * d + 1)) // s + 1
            for size, k, s, d, (b, e) in zip(in_sizes, kernel, strides, dilations, pads)]


def im2col(x: np.ndarray, kernel, strides, dilations, pads, rows: np.ndarray | None) -> np.ndarray:
    """Patches of ``x`` [B, C, *S] at output rows (flat over [B, *S_out]): [rows, C, prod(kernel)]."""
    spatial = x.shape[2:]
    outs = out_sizes(spatial, kernel, strides, dilations, pads)
    padded = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    if rows is None:
        rows = np.arange(x.shape[0] * int(np.prod(outs)))
    coords = np.unravel_index(np.asarray(rows, dtype=np.int64), [x.shape[0]] + outs)
    n = len(spatial)
    # one index array per axis, broadcast to [rows, k_1, ..., k_n]
    index = [coords[0].reshape((-1,) + (1,) * n)]
    for axis, (o, k, s, d) in enumerate(zip(coords[1:], kernel, strides, dilations)):
        shape = [1] * (n + 1)
        shape[axis + 1] = k
        index.append(o.reshape((-1,) + (1,) * n) * s + (np.arange(k) * d).reshape(shape))
    patches = padded[(index[0], slice(None), *index[1:])]  # advanced indices apart: [rows, k..., C]
    patches = np.moveaxis(patches, -1, 1)
    return patches.reshape(len(patches), x.shape[1], -1)


def transposed_out_sizes(in_sizes, kernel, strides, dilations, pads, output_padding) -> list[int]:
    """A transposed convolution's output sizes (ONNX ConvTranspose without ``output_shape``)."""
    return [s * (size - 1) + op + (k - 1) * d + 1 - b - e
            for size, k, s, d, (b, e), op in zip(in_sizes, kernel, strides, dilations, pads, output_padding)]


def col2im_rows(x: np.ndarray, kernel, strides, dilations, pads, outs, rows: np.ndarray | None) -> np.ndarray:
    """What a transposed convolution's output rows (flat over [B, *outs]) read of ``x`` [B, C, *S]:
    [rows, C, prod(kernel)]. Output position ``p`` gets tap ``t`` of input position
    ``q = (p + pad_begin - t * dilation) / stride`` where that is a whole number inside the input;
    the other taps of the row are zeros (a row reads one tap in ``stride`` per axis)."""
    spatial = x.shape[2:]
    if rows is None:
        rows = np.arange(x.shape[0] * int(np.prod(outs)))
    coords = np.unravel_index(np.asarray(rows, dtype=np.int64), [x.shape[0]] + list(outs))
    n = len(spatial)
    index, valid = [coords[0].reshape((-1,) + (1,) * n)], np.ones((len(rows),) + (1,) * n, dtype=bool)
    for axis, (p, k, s, d, (b, _), size) in enumerate(zip(coords[1:], kernel, strides, dilations, pads, spatial)):
        shape = [1] * (n + 1)
        shape[axis + 1] = k
        reach = p.reshape((-1,) + (1,) * n) + b - (np.arange(k) * d).reshape(shape)
        q, rest = np.divmod(reach, s)
        valid = valid & (rest == 0) & (q >= 0) & (q < size)
        index.append(np.clip(q, 0, size - 1))
    patches = x[(index[0], slice(None), *index[1:])]  # [rows, k..., C]
    patches = np.where(valid[..., None], patches, 0).astype(x.dtype, copy=False)
    patches = np.moveaxis(patches, -1, 1)
    return patches.reshape(len(patches), x.shape[1], -1)
