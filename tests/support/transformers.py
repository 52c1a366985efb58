"""A BERT-style classifier built like an export (no torch): dynamic batch and sequence,
every Reshape target computed at run time (Shape -> Gather -> Unsqueeze -> Concat with
constant heads/head_dim/hidden pieces), embeddings, LayerNorm, a CLS-token head."""
from __future__ import annotations

import numpy as np
import onnx

from .builder import GraphBuilder

HIDDEN, HEADS, MLP, VOCAB, LAYERS, CLASSES = 32, 4, 64, 50, 2, 3


def _dim(b: GraphBuilder, x, axis):
    picked = b.op("Gather", [b.op("Shape", [x]), b.const(np.asarray(axis, np.int64))], axis=0)
    return b.op("Unsqueeze", [picked, b.const(np.asarray([0], np.int64))])


def _linear(b: GraphBuilder, x, nin, nout):
    y = b.op("MatMul", [x, b.param((nin, nout), scale=1.0 / np.sqrt(nin))])
    return b.op("Add", [b.param((nout,), scale=0.1), y])


def _layer_norm(b: GraphBuilder, x):
    return b.op("LayerNormalization", [x, b.param(np.ones(HIDDEN) + 0.1 * b.rng.standard_normal(HIDDEN)),
                                       b.param((HIDDEN,), scale=0.1)], axis=-1, epsilon=1e-5)


def _attention(b: GraphBuilder, x):
    head_dim = HIDDEN // HEADS
    split = lambda t: b.op("Concat", [_dim(b, t, 0), _dim(b, t, 1), b.const(np.asarray([HEADS], np.int64)),  # noqa: E731
                                      b.const(np.asarray([head_dim], np.int64))], axis=0)
    q, k, v = (_linear(b, x, HIDDEN, HIDDEN) for _ in range(3))
    q = b.op("Transpose", [b.op("Reshape", [q, split(q)])], perm=[0, 2, 1, 3])
    k = b.op("Transpose", [b.op("Reshape", [k, split(k)])], perm=[0, 2, 3, 1])
    v = b.op("Transpose", [b.op("Reshape", [v, split(v)])], perm=[0, 2, 1, 3])
    scores = b.op("Mul", [b.op("MatMul", [q, k]), b.const(np.asarray(1 / np.sqrt(head_dim), np.float32))])
    context = b.op("Transpose", [b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])], perm=[0, 2, 1, 3])
    merge = b.op("Concat", [_dim(b, context, 0), _dim(b, context, 1), b.const(np.asarray([HIDDEN], np.int64))],
                 axis=0)
    return _linear(b, b.op("Reshape", [context, merge]), HIDDEN, HIDDEN)


def bert_classifier(seed: int = 0) -> onnx.ModelProto:
    b = GraphBuilder(opset=17, seed=seed, name="bert_classifier")
    ids = b.input("input_ids", ["batch", "seq"], dtype=np.int64)
    words = b.op("Gather", [b.param((VOCAB, HIDDEN)), ids], axis=0)
    seq = b.op("Gather", [b.op("Shape", [ids]), b.const(np.asarray(1, np.int64))], axis=0)
    positions = b.op("Range", [b.const(np.asarray(0, np.int64)), seq, b.const(np.asarray(1, np.int64))])
    x = _layer_norm(b, b.op("Add", [words, b.op("Gather", [b.param((16, HIDDEN)), positions], axis=0)]))
    for _ in range(LAYERS):
        x = _layer_norm(b, b.op("Add", [x, _attention(b, x)]))
        mlp = _linear(b, b.op("Relu", [_linear(b, x, HIDDEN, MLP)]), MLP, HIDDEN)
        x = _layer_norm(b, b.op("Add", [x, mlp]))
    cls = b.op("Gather", [x, b.const(np.asarray(0, np.int64))], axis=1)  # [batch, hidden]
    b.output(b.rename(_linear(b, cls, HIDDEN, CLASSES), "logits"))
    return b.build()


def feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"input_ids": np.random.default_rng(seed).integers(0, VOCAB, (batch, seq)).astype(np.int64)}
