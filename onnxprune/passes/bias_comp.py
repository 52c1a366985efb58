"""Bias compensation (FLAP): a removed input channel's mean contribution moves into the
consumer's bias, so the layer's outputs keep their mean.

For each linear layer that lost input channels, the mean of every unfolded input column
(channel x kernel tap, padding included) is measured on the *original* model, where the
removed channels still exist; ``sum_k W[:, k] * E[x_k]`` over the removed columns is
added to the bias. A channel that is constant on the data (a dead ReLU's bias, a
saturated unit) is thereby removed exactly, wherever no padding cuts its window (where
rows read different taps, a transposed convolution's, on average over the rows). Layers
that cannot take a bias (MatMul) are left as they are and named in the notes, and so are
layers least squares re-fits afterwards (``refitted``): its solution does not depend on the
weights it starts from, so compensating them first would only cost a pass over the data.
"""
from __future__ import annotations

import numpy as np

from ..edits import EditMap
from ..ir import Graph
from ..options import RecoveryOptions
from ..registry import Registry
from . import PassResult
from .layers import linear_layers, original_layer, paired_batches, sample_rows, with_updates


class BiasCompensation:
    """Move removed channels' mean contributions into biases (a :class:`GraphPass`)."""

    name = "bias compensation"

    def __init__(self, original: Graph, data, edits: EditMap, registry: Registry,
                 options: RecoveryOptions | None = None, refitted: frozenset[str] = frozenset()):
        self.original, self.data, self.edits, self.registry = original, data, edits, registry
        self.refitted = refitted
        self.options = options or RecoveryOptions()

    def run(self, graph: Graph) -> PassResult:
        layers, notes = [], []
        for layer in linear_layers(graph, self.registry):
            if not self.edits.lost_channels(layer.input, layer.form.in_axis) or layer.node.name in self.refitted:
                continue
            original = original_layer(self.original, self.registry, self.edits, layer)
            if original is None:
                notes.append(f"{layer.node.name}: merged or rewired since the original, no matrix to compensate from")
                continue
            if layer.form.bias() is None and not layer.form.can_add_bias:
                notes.append(f"{layer.node.name}: no bias to compensate into")
                continue
            layers.append((layer, original))
        if not layers:
            return PassResult(self.name, graph, 0, tuple(notes))
        means = self._column_means([o for _, o in layers])
        updates = {}
        for (layer, original), mean in zip(layers, means):
            updates[layer.node.name] = layer.form.store(layer.form.matrix(), self._bias(layer, original, mean))
        return PassResult(self.name, with_updates(graph, updates), len(updates), tuple(notes))

    def _column_means(self, originals) -> list[np.ndarray]:
        """E[unfolded input column] per layer, [groups, K], on the original model."""
        rng = np.random.default_rng(self.options.seed)
        sums = [None] * len(originals)
        counts = [0] * len(originals)
        inputs = [o.input for o in originals]
        for values, _ in paired_batches(self.original, inputs, None, [], self.data,
                                        self.options.batch_size, self.options.provider):
            for i, layer in enumerate(originals):
                x = np.asarray(values[layer.input])
                cols = layer.form.unfold(x, sample_rows(layer.form.n_rows(x.shape), self.options.max_rows, rng))
                total = cols.astype(np.float64).sum(axis=0)
                sums[i] = total if sums[i] is None else sums[i] + total
                counts[i] += len(cols)
        return [s / c for s, c in zip(sums, counts)]

    def _bias(self, layer, original, mean: np.ndarray) -> np.ndarray:
        """The pruned layer's bias plus the removed columns' mean contribution, per kept output."""
        orig_form, form = original.form, layer.form
        groups, _, k = orig_form.matrix().shape
        in_channels = groups * (int(orig_form.k_channel.max()) + 1)
        per_group = in_channels // groups
        kept_in = self.edits.kept_indices(layer.input, form.in_axis, in_channels)
        removed = np.ones(in_channels, dtype=bool)
        removed[kept_in] = False
        column_channel = np.arange(groups)[:, None] * per_group + orig_form.k_channel[None, :]  # [G, K]
        lost = removed[column_channel] * mean  # [G, K]: mean of removed columns, 0 elsewhere
        delta = np.einsum("gok,gk->go", orig_form.matrix().astype(np.float64), lost).reshape(-1)
        out_channels = form.matrix().shape[0] * form.matrix().shape[1]
        kept_out = self.edits.kept_indices(form.output, form.out_axis, out_channels)
        bias = form.bias()
        base = np.zeros(out_channels) if bias is None else np.asarray(bias, np.float64)
        return base + delta[kept_out]
