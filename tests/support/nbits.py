"""MatMulNBits layers built with numpy: codes quantized per block of K, packed low bits first (onnxruntime's
contrib op layout: B [N, k_blocks, block_size * bits / 8], scales [N * k_blocks], packed zero points
[N * ceil(k_blocks * bits / 8)])."""
from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes along the last axis into bytes, low bits first; the last byte padded with zeros."""
    per = 8 // bits
    pad = (-codes.shape[-1]) % per
    codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (pad,), codes.dtype)], axis=-1).astype(np.uint32)
    grouped = codes.reshape(*codes.shape[:-1], -1, per)
    return np.bitwise_or.reduce(grouped << (np.arange(per, dtype=np.uint32) * bits), axis=-1).astype(np.uint8)


def quantize(w: np.ndarray, block: int, bits: int = 4, zero_points: bool = True):
    """Asymmetric (or symmetric: zero point 2^(bits-1)) per-block quantization of a float weight W [K, N] as
    MatMulNBits stores it; returns (B, scales, zero points or None, the dequantized W [K, N])."""
    k, n = w.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), np.float32)
    padded[:k] = w
    grid = padded.T.reshape(n, blocks, block)
    top = (1 << bits) - 1
    if zero_points:
        lo, hi = np.minimum(grid.min(-1), 0), np.maximum(grid.max(-1), 0)
        scale = np.maximum(hi - lo, 1e-6) / top
        zero = np.clip(np.round(-lo / scale), 0, top).astype(np.uint8)
    else:
        scale = np.maximum(np.abs(grid).max(-1), 1e-6) / (1 << (bits - 1))
        zero = np.full((n, blocks), 1 << (bits - 1), np.uint8)
    codes = np.clip(np.round(grid / scale[..., None]) + zero[..., None], 0, top).astype(np.uint8)
    real = ((codes.astype(np.float32) - zero[..., None]) * scale[..., None]).reshape(n, -1)[:, :k].T
    packed_zero = pack(zero, bits).reshape(-1) if zero_points else None
    return pack(codes, bits), scale.astype(np.float32).reshape(-1), packed_zero, real


def layer(name: str, a: str, w: np.ndarray, block: int, bits: int = 4, zero_points: bool = True,
          bias: np.ndarray | None = None):
    """(node, initializers) of ``a @ W (+ bias)`` as one MatMulNBits; W is [K, N]."""
    b, scales, zero, _ = quantize(w, block, bits, zero_points)
    inits = [numpy_helper.from_array(b, f"{name}_B"), numpy_helper.from_array(scales, f"{name}_scales")]
    inputs = [a, f"{name}_B", f"{name}_scales"]
    if zero is not None:
        inits.append(numpy_helper.from_array(zero, f"{name}_zero_points"))
        inputs.append(f"{name}_zero_points")
    if bias is not None:
        inputs += [""] * (5 - len(inputs)) + [f"{name}_bias"]
        inits.append(numpy_helper.from_array(bias.astype(np.float32), f"{name}_bias"))
    node = helper.make_node("MatMulNBits", inputs, [name], name=name, domain="com.microsoft", K=w.shape[0],
                            N=w.shape[1], bits=bits, block_size=block)
    return node, inits
