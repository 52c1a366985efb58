"""A token MLP whose output is zeroed at padding, and data for it: the rows recovery's weighting should ignore."""
from __future__ import annotations

import numpy as np
import onnx

from support.builder import GraphBuilder


def token_mlp(b: GraphBuilder, x, rng, width=12, out=6):
    """x [N, T, 8] -> MatMul+Add (width) -> Relu -> MatMul+Add (out); returns (output, second bias)."""
    w1, b1 = rng.standard_normal((8, width)) * 0.5, rng.standard_normal(width) * 0.1
    h = b.op("Relu", [b.op("Add", [b.op("MatMul", [x, b.param(w1.astype(np.float32))]),
                                   b.param(b1.astype(np.float32))])])
    w2, b2 = rng.standard_normal((width, out)) * 0.5, rng.standard_normal(out) * 0.1
    return b.op("Add", [b.op("MatMul", [h, b.param(w2.astype(np.float32))]), b.param(b2.astype(np.float32))]), b2


def masked_model() -> onnx.ModelProto:
    """An MLP over tokens whose output is zeroed at padding (mask 0): padding rows do not matter."""
    b = GraphBuilder(seed=21)
    x = b.input("input", ["N", "T", 8])
    mask = b.input("attention_mask", ["N", "T"], dtype=np.int64)
    y, _ = token_mlp(b, x, np.random.default_rng(22))
    keep = b.op("Unsqueeze", [b.op("Cast", [mask], to=1), b.const(np.asarray([2], np.int64))])
    b.output(b.rename(b.op("Mul", [y, keep]), "output"))
    return b.build()


def masked_data(n: int, seed: int) -> dict:
    """Padding (the last 6 of 10 tokens) holds values unlike the real tokens'."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10, 8)).astype(np.float32)
    x[:, 4:] = (rng.standard_normal((n, 6, 8)) * 3 + 2).astype(np.float32)
    mask = np.zeros((n, 10), np.int64)
    mask[:, :4] = 1
    return {"input": x, "attention_mask": mask}
