"""What a criterion sees: the dependency graph, a seeded rng and, for data-driven
criteria, calibration data with statistics collected once per prune.

Data-driven criteria declare up front which tensors they need (:class:`Need`);
the planner gathers the needs of every group and :meth:`ScoringContext.collect`
streams the calibration data through onnxruntime once for all of them. Only
running accumulators are kept (per-channel moments, Gram matrices), never the
activations themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable

import numpy as np

from .activations import DEFAULT_BATCH, ChannelStats, stream
from .calibration import OPTION as CALIB_OPTION
from .calibration import CalibrationSet
from .depgraph import DependencyGraph
from .errors import PlanError


class Collect(str, Enum):
    """What to accumulate for a tensor during the streaming pass."""

    STATS = "stats"  # per-index moments (ChannelStats)
    GRAM = "gram"  # the index-by-index second moment matrix E[x x^T]
    UNFOLDED_GRAM = "unfolded_gram"  # E[u u^T] of a linear layer's unfolded input rows (im2col)


@dataclass(frozen=True)
class Need:
    """A statistic of ``tensor`` over the indices of ``axes`` (flattened, row-major);
    for UNFOLDED_GRAM, of the input rows of ``node``'s matrix view (``OpSpec.linear``)."""

    tensor: str
    axes: tuple[int, ...]
    kind: Collect = Collect.STATS
    node: str = ""


def index_rows(value: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``value`` as a 2D array: one row per index of ``axes``, one column per other element."""
    value = np.asarray(value, dtype=np.float64)
    moved = np.moveaxis(value, list(axes), list(range(len(axes))))
    n = int(np.prod([value.shape[a] for a in axes]))
    return moved.reshape(n, -1)


class Gram:
    """Running E[x x^T] over the indices of some axes (bounded memory: n x n)."""

    def __init__(self, axes: tuple[int, ...]):
        self.axes = axes
        self.count = 0
        self.total: np.ndarray | None = None

    def update(self, value: np.ndarray) -> None:
        rows = index_rows(value, self.axes)
        product = rows @ rows.T
        self.total = product if self.total is None else self.total + product
        self.count += rows.shape[1]

    @property
    def matrix(self) -> np.ndarray:
        if self.total is None or not self.count:
            raise ValueError("no values seen yet")
        return self.total / self.count


ROWS_PER_BATCH = 256  # unfolded rows sampled per batch: im2col of a whole feature map is large


def linear_form(dg: DependencyGraph, node: str):
    """The matrix view a node's rule declares (``OpSpec.linear``), or None."""
    spec = dg.spec(node)
    return spec.linear(dg.view(node)) if spec is not None and spec.linear is not None else None


def unfolded_need(dg: DependencyGraph, node: str) -> Need:
    """The need for E[u u^T] of a node's unfolded input (the node must have a matrix view)."""
    form = linear_form(dg, node)
    tensor = dg.graph.node_by_name[node].inputs[form.input_slot]
    return Need(tensor, (int(form.in_axis),), Collect.UNFOLDED_GRAM, node)


class UnfoldedGram:
    """Running E[u u^T] over a linear layer's unfolded input rows (one group), rows sampled per batch."""

    def __init__(self, form, seed: int = 0):
        self.form = form
        self.rng = np.random.default_rng(seed)
        self.count = 0
        self.total: np.ndarray | None = None

    def update(self, value: np.ndarray) -> None:
        n = self.form.n_rows(value.shape)
        rows = None if n <= ROWS_PER_BATCH else np.sort(self.rng.choice(n, ROWS_PER_BATCH, replace=False))
        u = np.asarray(self.form.unfold(np.asarray(value), rows)[:, 0, :], dtype=np.float64)
        product = u.T @ u
        self.total = product if self.total is None else self.total + product
        self.count += len(u)

    @property
    def matrix(self) -> np.ndarray:
        if self.total is None or not self.count:
            raise ValueError("no values seen yet")
        return self.total / self.count


class _IndexStats:
    """ChannelStats over the flattened indices of several axes."""

    def __init__(self, axes: tuple[int, ...]):
        self.axes = axes
        self.stats = ChannelStats(axis=0)

    def update(self, value: np.ndarray) -> None:
        self.stats.update(index_rows(value, self.axes))


class ScoringContext:
    """Everything criteria read; statistics are cached per (tensor, axes, kind).

    ``passes`` counts the streaming passes over the calibration data (one per
    :meth:`collect` that had anything to compute), so callers and tests can
    check that a whole prune costs one pass.
    """

    def __init__(self, dg: DependencyGraph, rng: np.random.Generator | None = None,
                 data: CalibrationSet | None = None, provider: str = "cpu", batch_size: int = DEFAULT_BATCH,
                 progress: Callable[[Iterable], Iterable] | None = None):
        self.dg = dg
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.data = data
        self.provider = provider
        self.batch_size = batch_size
        self.progress = progress
        self.passes = 0
        self._cache: dict[Need, object] = {}

    @property
    def graph(self):
        return self.dg.graph

    def require_data(self, criterion: str) -> CalibrationSet:
        if self.data is None:
            raise PlanError(f"criterion '{criterion}' needs calibration data: give {CALIB_OPTION} FILE.npz")
        return self.data

    def collect(self, needs: Iterable[Need], criterion: str = "data-driven") -> None:
        """Compute every missing statistic in one streaming pass over the calibration data."""
        missing = [n for n in dict.fromkeys(needs) if n not in self._cache]
        if not missing:
            return
        data = self.require_data(criterion)
        accumulators = {n: self._accumulator(n) for n in missing}
        tensors = list(dict.fromkeys(n.tensor for n in missing))
        self.passes += 1
        for values in stream(self.graph, tensors, data, self.provider, self.batch_size, self.progress):
            for need, acc in accumulators.items():
                acc.update(values[need.tensor])
        self._cache.update(accumulators)

    def _accumulator(self, need: Need):
        if need.kind == Collect.GRAM:
            return Gram(need.axes)
        if need.kind == Collect.UNFOLDED_GRAM:
            return UnfoldedGram(linear_form(self.dg, need.node))
        return _IndexStats(need.axes)

    def stats(self, tensor: str, axes: tuple[int, ...]) -> ChannelStats:
        """Per-index moments of ``tensor`` over ``axes`` (collected now if not yet)."""
        need = Need(tensor, tuple(axes), Collect.STATS)
        self.collect([need])
        return self._cache[need].stats  # type: ignore[union-attr]

    def gram(self, tensor: str, axes: tuple[int, ...]) -> np.ndarray:
        """E[x x^T] of ``tensor`` over the indices of ``axes`` (collected now if not yet)."""
        need = Need(tensor, tuple(axes), Collect.GRAM)
        self.collect([need])
        return self._cache[need].matrix  # type: ignore[union-attr]

    def unfolded_gram(self, node: str) -> np.ndarray:
        """E[u u^T] of ``node``'s unfolded input rows (its rule's matrix view; collected now if not yet)."""
        need = unfolded_need(self.dg, node)
        self.collect([need])
        return self._cache[need].matrix  # type: ignore[union-attr]
