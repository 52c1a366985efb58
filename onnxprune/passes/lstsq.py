"""Least-squares reconstruction: re-fit each linear layer that lost input channels so
that, on calibration data, its outputs match the unpruned model's (He et al. 2017,
ThiNet; the layer-wise "mask tuning" of Kwon et al. 2022).

The inputs X are the *pruned* model's own values at that layer, with every earlier
layer already re-fitted: layers are solved front to back, one pass over the data per
level of layers that do not feed each other, so errors are compensated instead of
accumulated. The targets Y are the original model's values of the tensor the layer's output
stands for (followed through the edits' map, never by name: after a normalization was folded
into the layer, that is the normalization's output), restricted to the output channels that
are still there. Layers re-fitted: those that lost input channels, the first layers after
a node an edit rewired (after a removed block: its readers read the skip input now), and
layers an edit changed themselves (their input as in the original, their output not: a
merge across a removed activation). Only the
Gram matrices X^T X and X^T Y are kept (memory: K^2 per group, not activations), and
each group (grouped/depthwise convs) is solved on its own with a small ridge. Where the
layer has or can take a bias, it is fitted as an intercept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..edits import EditMap
from ..ir import Graph
from ..options import RecoveryOptions
from ..registry import Registry
from . import PassResult
from .layers import (Layer, after_rewire, front_to_back, layer_named, linear_layers, paired_batches, progress_bar, rewired,
                     sample_rows, with_updates)


@dataclass
class _Normal:
    """Accumulated normal equations of one layer (per group, intercept column last)."""

    layer: Layer
    target: str  # the original model's tensor the layer's output stands for
    kept_out: np.ndarray
    intercept: bool
    xtx: np.ndarray | None = None
    xty: np.ndarray | None = None
    rows: int = 0

    def update(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, limit: int) -> None:
        form = self.layer.form
        rows = sample_rows(form.n_rows(x.shape), limit, rng)
        cols = form.unfold(np.asarray(x), rows).astype(np.float64)
        target = form.out_rows(np.asarray(y))
        target = (target if rows is None else target[rows])[:, self.kept_out].astype(np.float64)
        target = target.reshape(len(target), form.groups, -1)
        if self.intercept:
            cols = np.concatenate([cols, np.ones(cols.shape[:2] + (1,))], axis=2)
        by_group = np.ascontiguousarray(cols.transpose(1, 0, 2))  # [G, rows, K]
        by_group_t = np.ascontiguousarray(cols.transpose(1, 2, 0))  # [G, K, rows]
        gram = by_group_t @ by_group  # one BLAS product per group
        cross = by_group_t @ np.ascontiguousarray(target.transpose(1, 0, 2))
        self.xtx = gram if self.xtx is None else self.xtx + gram
        self.xty = cross if self.xty is None else self.xty + cross
        self.rows += len(cols)

    def solve(self, ridge: float):
        """(matrix [G, O, K], bias [G*O] or None) minimizing ||X W^T + b - Y||^2 + ridge ||W||^2."""
        k = self.layer.form.matrix().shape[2]
        matrices, biases = [], []
        for gram, cross in zip(self.xtx, self.xty):
            scale = float(np.trace(gram[:k, :k])) / max(k, 1)
            gram = gram.copy()
            gram[np.arange(k), np.arange(k)] += ridge * scale + 1e-12
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
    """Re-fit layers that lost input channels, front to back (a :class:`GraphPass`)."""

    name = "least-squares refit"

    def __init__(self, original: Graph, data, edits: EditMap, registry: Registry,
                 options: RecoveryOptions | None = None, progress: bool = False):
        self.original, self.data, self.edits, self.registry = original, data, edits, registry
        self.options = options or RecoveryOptions()
        self.progress = progress

    def targets(self, graph: Graph) -> list[str]:
        found, after = [], after_rewire(self.original, self.edits, graph, self.registry)
        for layer in linear_layers(graph, self.registry):
            if self.edits.tensor_origin(layer.form.output) not in self.original.producers:
                continue  # nothing in the original to fit to
            if self.edits.lost_channels(layer.input, layer.form.in_axis) or rewired(self.original, self.edits, layer) \
                    or layer.node.name in after or _edited_itself(self.edits, layer):
                found.append(layer.node.name)
        return found

    def run(self, graph: Graph) -> PassResult:
        rng = np.random.default_rng(self.options.seed)
        levels = front_to_back(graph, self.targets(graph))
        changed, notes, fitted = 0, [], set()
        for level in progress_bar(levels, self.name, self.progress):
            normals = [self._normal(graph, name) for name in level]
            batches = paired_batches(graph, [n.layer.input for n in normals], self.original,
                                     [n.target for n in normals], self.data,
                                     self.options.batch_size, self.options.provider)
            for got, ref in batches:
                for n in normals:
                    n.update(got[n.layer.input], ref[n.target], rng, self.options.max_rows)
            updates = {}
            for n in normals:
                matrix, bias = n.solve(self.options.ridge)
                updates[n.layer.node.name] = n.layer.form.store(matrix, bias)
                fitted.add(n.layer.form.output)
                if not n.intercept:
                    notes.append(f"{n.layer.node.name}: no bias to fit (weights only)")
            graph = with_updates(graph, updates)
            changed += len(updates)
        return PassResult(self.name, graph, changed, tuple(notes), frozenset(fitted))

    def _normal(self, graph: Graph, name: str) -> _Normal:
        layer = layer_named(graph, self.registry, name)
        form = layer.form
        out_channels = form.matrix().shape[0] * form.matrix().shape[1]
        kept_out = self.edits.kept_indices(form.output, form.out_axis, out_channels)
        intercept = form.bias() is not None or form.can_add_bias
        return _Normal(layer, self.edits.tensor_origin(form.output), kept_out, intercept)
