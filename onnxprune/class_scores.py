"""Outputs whose arg-max is the answer, read the same way by fidelity and by recovery's row weights."""
from __future__ import annotations

import numpy as np


def class_scores(value: np.ndarray) -> bool:
    """[N, C] scores, or [N, T, C] probabilities (rows summing to 1): arg-max is the answer."""
    if not np.issubdtype(value.dtype, np.floating) or value.ndim < 2 or value.shape[-1] < 2:
        return False
    return value.ndim == 2 or sequence_probabilities(value)


def sequence_probabilities(value: np.ndarray) -> bool:
    """[N, T, C] per-position probabilities (rows summing to 1): a CTC or token-classifier output."""
    return (value.ndim == 3 and value.shape[-1] >= 2 and np.issubdtype(value.dtype, np.floating)
            and bool(np.allclose(value.sum(axis=-1), 1.0, atol=1e-3)))


def dominant_class(counts: np.ndarray) -> int | None:
    """The class holding more than half of all positions (a CTC blank, a padding token), or None."""
    total = counts.sum()
    best = int(counts.argmax())
    return best if total and counts[best] * 2 > total else None
