"""The exported Transformer / RNN / graph models in ``tests/models`` and inputs for them.

Made by ``scripts/export_transformers.py`` (see ``tests/models/README.md``);
the tests use them without torch. Each model is checked at two sizes of its
dynamic axes: sequence length for text, batch for images, node count for graphs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import onnx

MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "models")
VOCAB = 100  # vocabulary of every text model


@dataclass(frozen=True)
class Exported:
    name: str  # file stem, e.g. "bert_ts"
    arch: str  # "bert"
    exporter: str  # "ts" (TorchScript, dynamo=False) or "dynamo"
    path: str
    sizes: tuple[tuple[int, int], tuple[int, int]]  # two (batch, length) pairs the model is run at

    def load(self) -> onnx.ModelProto:
        return _load(self.path)

    def feeds(self, which: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
        batch, length = self.sizes[which]
        return make_feeds(self.load(), batch, length, seed)


# (batch, length) pairs per architecture; images have a fixed size, so their batch varies
SIZES = {
    "vit": ((1, 0), (3, 0)), "swin": ((1, 0), (3, 0)), "tv_vit": ((1, 0), (3, 0)), "tv_swin": ((1, 0), (3, 0)),
    "char_transformer": ((1, 16), (3, 16)),  # a fixed context of 16 characters
    "gcn": ((1, 9), (1, 14)),
}
DEFAULT_SIZES = ((1, 7), (2, 12))


def exported_models() -> list[Exported]:
    found = []
    for file in sorted(os.listdir(MODELS_DIR)):
        if not file.endswith(".onnx"):
            continue
        stem = file[: -len(".onnx")]
        arch, exporter = stem.rsplit("_", 1)
        found.append(Exported(stem, arch, exporter, os.path.join(MODELS_DIR, file), SIZES.get(arch, DEFAULT_SIZES)))
    return found


def by_name(name: str) -> Exported:
    return next(m for m in exported_models() if m.name == name)


@lru_cache(maxsize=None)
def _load(path: str) -> onnx.ModelProto:
    return onnx.load(path)


def make_feeds(model: onnx.ModelProto, batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for ``model`` with its symbolic dims set: batch, seq / nodes = length, edges = 3 x nodes."""
    rng = np.random.default_rng(seed)
    dims = {"batch": batch, "seq": length, "nodes": length, "edges": 3 * length}
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        shape = [d.dim_value if d.HasField("dim_value") else dims[d.dim_param] for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = _input(vi.name, shape, rng, length)
    return feeds


def _input(name: str, shape, rng, length) -> np.ndarray:
    if name in ("input_ids", "ids"):
        return rng.integers(0, VOCAB, shape, dtype=np.int64)
    if name == "attention_mask":
        mask = np.ones(shape, dtype=np.int64)
        mask[0, -2:] = 0  # padding on the first row, so the mask is exercised
        return mask
    if name == "edge_index":
        return rng.integers(0, length, shape, dtype=np.int64)
    if name == "adj":
        a = (rng.random(shape) < 0.3).astype(np.float32) + np.eye(shape[0], dtype=np.float32)
        return a / a.sum(axis=1, keepdims=True)
    return rng.standard_normal(shape).astype(np.float32)
