"""Streaming intermediate tensors through onnxruntime, one batch at a time.

Selection and recovery need statistics of tensors inside the model (a layer's
input channels, its outputs) over many calibration samples. Keeping every
activation of every sample would cost samples x layers memory. Instead a
temporary copy of the graph exposes the wanted tensors as extra outputs; each
batch's values go to accumulators (running sums, Gram matrices) and are
dropped. Memory is one batch's activations plus the accumulators, whatever the
number of samples.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .calibration import CalibrationSet
from .errors import ShapeError
from .ir import Graph, Value

DEFAULT_BATCH = 16


def expose(graph: Graph, tensors: Sequence[str]) -> Graph:
    """A copy of ``graph`` whose outputs also include ``tensors`` (intermediate values)."""
    present = {v.name for v in graph.outputs} | graph.graph_input_names
    extra = []
    for name in dict.fromkeys(tensors):
        if name in present or name in graph.params:
            continue
        if name not in graph.producers:
            raise ShapeError(f"tensor {name} is not produced by any node")
        value = graph.values.get(name)
        if value is None or not value.dtype:
            raise ShapeError(f"element type of {name} unknown: cannot collect it")
        extra.append(Value(name, value.dtype, None))  # no shape: the batch size differs from analysis
    if not extra:
        return graph
    return dataclasses.replace(graph, outputs=list(graph.outputs) + extra)


def batch_size_for(graph: Graph, requested: int = DEFAULT_BATCH) -> int:
    """The batch size the model accepts: ``requested``, unless an input fixes its first dim."""
    for value in graph.inputs:
        if value.shape and isinstance(value.shape[0], int) and value.shape[0] > 0:
            return int(value.shape[0])
    return max(1, int(requested))


def stream(graph: Graph, tensors: Sequence[str], data: CalibrationSet, provider: str = "cpu",
           batch_size: int = DEFAULT_BATCH, progress: Callable[[Iterable], Iterable] | None = None
           ) -> Iterator[dict[str, np.ndarray]]:
    """Yield, per batch, ``{name: value}`` for every requested tensor and every graph output.

    Requested graph inputs come from the feeds and parameters from the graph, so
    any tensor name can be asked for. ``progress`` wraps the batch iterator (tqdm).
    """
    from .validate import session  # late: validate imports onnxruntime-heavy helpers
    exposed = expose(graph, tensors)
    sess = session(exposed, provider)
    names = [o.name for o in sess.get_outputs()]
    size = batch_size_for(graph, batch_size)
    batches = data.batches(size)
    if progress is not None:
        batches = progress(batches)
    for feeds in batches:
        values = dict(zip(names, sess.run(None, feeds)))
        for name in tensors:
            if name in feeds:
                values[name] = feeds[name]
            elif name in graph.params:
                values[name] = graph.params[name]
        yield values


class ChannelStats:
    """Running per-channel moments of a tensor along one axis (bounded memory)."""

    def __init__(self, axis: int):
        self.axis = axis
        self.count = 0
        self.sum: np.ndarray | None = None
        self.sum_abs: np.ndarray | None = None
        self.sum_sq: np.ndarray | None = None
        self.zeros: np.ndarray | None = None

    def update(self, value: np.ndarray) -> None:
        rows = np.moveaxis(np.asarray(value, dtype=np.float64), self.axis, 0)
        rows = rows.reshape(rows.shape[0], -1)
        if self.sum is None:
            self.sum, self.sum_abs, self.sum_sq, self.zeros = (np.zeros(rows.shape[0]) for _ in range(4))
        self.count += rows.shape[1]
        self.sum += rows.sum(axis=1)
        self.sum_abs += np.abs(rows).sum(axis=1)
        self.sum_sq += np.square(rows).sum(axis=1)
        self.zeros += (rows == 0).sum(axis=1)

    def _per(self, total: np.ndarray | None) -> np.ndarray:
        if total is None or not self.count:
            raise ValueError("no values seen yet")
        return total / self.count

    @property
    def mean(self) -> np.ndarray:
        return self._per(self.sum)

    @property
    def mean_abs(self) -> np.ndarray:
        return self._per(self.sum_abs)

    @property
    def second_moment(self) -> np.ndarray:
        """E[x^2] per channel: the channel's energy, what a consumer's output sees of it."""
        return self._per(self.sum_sq)

    @property
    def variance(self) -> np.ndarray:
        return np.maximum(self.second_moment - np.square(self.mean), 0.0)

    @property
    def zero_fraction(self) -> np.ndarray:
        return self._per(self.zeros)


def channel_stats(graph: Graph, axes: dict[str, int], data: CalibrationSet, provider: str = "cpu",
                  batch_size: int = DEFAULT_BATCH, progress=None) -> dict[str, ChannelStats]:
    """Per-channel statistics of each tensor in ``axes`` (name -> channel axis) over ``data``."""
    stats = {name: ChannelStats(axis) for name, axis in axes.items()}
    for values in stream(graph, list(axes), data, provider, batch_size, progress):
        for name, acc in stats.items():
            acc.update(values[name])
    return stats
