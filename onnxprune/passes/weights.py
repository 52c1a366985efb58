"""Row weights for least squares: the positions that matter count more.

A fit on every output position treats padding tokens (41% of MiniLM's rows on its calibration
text) and CTC blanks (most of a text recogniser's frames) like the positions the answer is read
from, so the fit spends its freedom on them. Per batch, a weight per sample and position
([N, T]) is derived from the feeds (an attention mask) and the original model's outputs (a
sequence whose arg-max is mostly one class); a layer's rows take the weight of the position
they fall on along their last spatial axis (resampled to T), so convolutional stages before a
sequence head are weighted too. Weights depend only on the batch, so statistics of shards
still sum to those of the whole.
"""
from __future__ import annotations

import numpy as np

from ..class_scores import dominant_class, sequence_probabilities
from ..ir import Graph
from ..options import RecoveryOptions, RowWeighting
from ..tensor_types import np_dtype


def mask_inputs(graph: Graph) -> list[str]:
    """Inputs read as attention masks: integer or boolean, rank 2, "mask" in the name."""
    found = []
    for value in graph.inputs:
        if "mask" not in value.name.lower() or value.shape is None or len(value.shape) != 2:
            continue
        if np_dtype(value.dtype).kind in "iub":
            found.append(value.name)
    return found


def sequence_outputs(graph: Graph) -> list[str]:
    """Outputs that may be per-position class scores ([N, T, classes]): checked on the values."""
    return [v.name for v in graph.outputs if v.shape is not None and len(v.shape) == 3]


class RowWeights:
    """Position weights per batch, and each layer's row weights from them."""

    def __init__(self, original: Graph, options: RecoveryOptions):
        self.background = options.background_weight
        on = options.weighting is RowWeighting.AUTO
        self.masks = mask_inputs(original) if on else []
        self.sequences = sequence_outputs(original) if on else []

    @property
    def active(self) -> bool:
        return bool(self.masks or self.sequences)

    def positions(self, feeds: dict, outputs: dict) -> np.ndarray | None:
        """[N, T] weights of this batch, or None where every position counts the same."""
        weights = None
        for name in self.masks:
            mask = np.asarray(feeds[name])
            weights = _times(weights, np.where(mask != 0, 1.0, self.background))
        for name in self.sequences:
            scores = np.asarray(outputs[name])
            if not sequence_probabilities(scores):
                continue
            best = scores.argmax(axis=-1)
            background = dominant_class(np.bincount(best.reshape(-1), minlength=scores.shape[-1]))
            if background is None:
                continue  # no class holds most positions: nothing to down-weight
            weights = _times(weights, np.where(best == background, self.background, 1.0))
        return weights


def layer_rows(positions: np.ndarray | None, y_shape: tuple[int, ...], out_axis: int) -> np.ndarray | None:
    """The weight of each row of a layer whose output has ``y_shape`` (rows: every index but the
    channel axis's, in order): the position weight its last spatial index falls on (resampled
    from T positions to that axis's length), or of its sample alone where it has no such axis."""
    if positions is None:
        return None
    n, t = positions.shape
    grid = [d for axis, d in enumerate(y_shape) if axis != out_axis % len(y_shape)]
    total = int(np.prod(grid))
    if grid and grid[0] == n and len(grid) >= 2:
        inner, length = int(np.prod(grid[1:-1])), grid[-1]
    elif total % n == 0:  # samples flattened with their positions ([N*T, C])
        inner, length = 1, total // n
    else:
        return None
    at = np.minimum((np.arange(length) * t) // max(length, 1), t - 1)
    per = positions[:, at]  # [N, length]
    return np.broadcast_to(per[:, None, :], (n, inner, length)).reshape(-1)


def _times(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    b = b.astype(np.float64)
    return b if a is None or a.shape != b.shape else a * b
