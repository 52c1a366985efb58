"""Task accuracy of a model's first output against labels, by the metric a model set names.

``top1``: class scores [N, C], labels int [N]: fraction of arg-max hits.
``ctc_char``: per-position character scores [N, T, C] (index 0 the CTC blank,
the rest ``characters``), labels str [N]: character accuracy
1 - sum(edit distance) / sum(label length), after greedy CTC decoding
(arg-max per position, repeats merged, blanks dropped), as OCR papers report it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def top1(outputs: list[np.ndarray], labels: np.ndarray) -> tuple[float, float]:
    """(hits, count) over a batch."""
    return float((outputs[0].argmax(axis=1) == labels).sum()), float(len(labels))


def ctc_decode(scores: np.ndarray, characters: Sequence[str]) -> str:
    best = scores.argmax(axis=-1)
    keep = np.ones(len(best), bool)
    keep[1:] = best[1:] != best[:-1]
    return "".join(characters[i] for i in best[keep] if i != 0)


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        diag, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (ca != cb))
    return row[len(b)]


def ctc_char(characters: Sequence[str]) -> Callable[[list[np.ndarray], np.ndarray], tuple[float, float]]:
    def score(outputs: list[np.ndarray], labels: np.ndarray) -> tuple[float, float]:
        errors = sum(min(len(t), edit_distance(ctc_decode(s, characters), str(t))) for s, t in zip(outputs[0], labels))
        total = sum(len(str(t)) for t in labels)
        return float(total - errors), float(total)
    return score


def characters_of(session) -> list[str]:
    """PaddleOCR's recogniser alphabet from the model's metadata: blank first, then the characters, then space."""
    return ["<blank>"] + session.get_modelmeta().custom_metadata_map["character"].split("\n") + [" "]


METRICS = {"top1": lambda session: top1, "ctc_char": lambda session: ctc_char(characters_of(session))}


def accuracy(model_bytes: bytes, input_name: str, x: np.ndarray, y: np.ndarray, metric: str = "top1",
             batch: int = 32) -> float:
    """The model's task accuracy on (x, y), in batches, by the named metric."""
    import onnxruntime as ort
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    score = METRICS[metric](session)
    hits = count = 0.0
    for start in range(0, len(x), batch):
        h, c = score(session.run(None, {input_name: x[start:start + batch]}), y[start:start + batch])
        hits, count = hits + h, count + c
    return hits / count
