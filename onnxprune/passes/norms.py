"""Normalizations whose statistics run over the channels (LayerNorm, RMSNorm over the hidden
size), seen by least squares as one more layer to re-fit.

Pruning the hidden size changes their mean and variance (over fewer channels), so every kept
channel's output moves, per sample, in a way no later layer's fixed weights can undo, and
through the residual stream that error reaches every later block. The node ends in a
per-channel scale and shift (y = z * scale + shift); composing it with a fitted per-channel map
(a * y' + d) is the same node with scale * a and shift * a + d. So each such node is re-fitted,
in its turn front to back, as C independent one-input regressions from its pruned output y'
(the pruned model's own values) to the original's output of the same channels: a depthwise
"layer" (:class:`NormForm`) the least-squares pass measures and solves like any other, with its
ridge pulling toward the identity (a = 1) instead of zero, so an exact prune stays exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..edits import EditMap
from ..ir import Graph, Node
from ..registry import Registry
from ..rules import NodeView, NormAffine, Updates
from .layers import Layer, layer_named


@dataclass
class NormForm:
    """The LinearForm view least squares uses: rows are positions, group c reads channel c of the
    node's own output and fits channel c of the original's output (the identity to start from)."""

    node: Node
    spec: NormAffine
    scale: np.ndarray
    shift: np.ndarray | None

    input_slot = -1  # unused: X is the node's output (see NormLayer.input)
    k_offset = np.zeros(1, np.int64)
    k_channel = np.zeros(1, np.int64)
    strides: tuple = ()
    displacements = None
    padded = False
    pads = None

    @property
    def in_axis(self) -> int:
        return self.spec.axis

    @property
    def out_axis(self) -> int:
        return self.spec.axis

    @property
    def output(self) -> str:
        return self.node.outputs[0]

    @property
    def groups(self) -> int:
        return len(self.scale)

    @property
    def can_add_bias(self) -> bool:
        return self.spec.shift_slot is not None

    def n_rows(self, x_shape: tuple[int, ...]) -> int:
        return int(np.prod(x_shape)) // x_shape[self.spec.axis]

    def out_rows(self, y: np.ndarray) -> np.ndarray:
        return np.moveaxis(np.asarray(y), self.spec.axis, -1).reshape(-1, y.shape[self.spec.axis])

    def unfold(self, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        flat = self.out_rows(x)
        return (flat if rows is None else flat[rows])[:, :, None]  # [rows, C groups, 1]

    def matrix(self) -> np.ndarray:
        return np.ones((self.groups, 1, 1))

    def bias(self) -> np.ndarray | None:
        return None if self.shift is None else np.zeros(self.groups)

    def store(self, matrix: np.ndarray, bias: np.ndarray | None, geometry=None) -> Updates:
        """scale * a, shift * a + d for the fitted a (``matrix`` [C, 1, 1]) and d (``bias``)."""
        if geometry is not None:
            raise ValueError("a normalization has no kernel grid")
        a = np.asarray(matrix, np.float64).reshape(-1)
        inputs = {self.spec.scale_slot: (self.scale * a).astype(self.scale.dtype)}
        if self.spec.shift_slot is not None and bias is not None:
            shift = np.zeros_like(self.scale) if self.shift is None else self.shift
            inputs[self.spec.shift_slot] = (shift * a + np.asarray(bias)).astype(self.scale.dtype)
        return Updates(inputs=inputs)


class NormLayer(Layer):
    """A normalization as least squares sees it: it reads (X) its own output."""

    @property
    def input(self) -> str:
        return self.form.output


def norm_layer(graph: Graph, registry: Registry, node: Node) -> NormLayer | None:
    spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
    if spec is None or spec.norm_affine is None:
        return None
    view = NodeView(node, graph)
    found = spec.norm_affine(view)
    if found is None:
        return None
    shift = view.const(found.shift_slot) if found.shift_slot is not None and view.has_input(found.shift_slot) \
        else None
    return NormLayer(node, NormForm(node, found, view.const(found.scale_slot), shift))


def changed_norms(graph: Graph, registry: Registry, edits: EditMap, original: Graph) -> list[NormLayer]:
    """Normalizations whose statistics pruning changed (their input lost channels along the
    normalized axis), whose output has a counterpart in the original to fit to, and that something
    other than re-fitted layers reads (a residual join, a graph output): where only layers that
    lost those input channels read it (a pre-norm block's projections), their own re-fit absorbs
    any per-channel map of it (W (a y + d) = (W diag a) y + W d), and a fit of the norm would only
    add noise."""
    found = []
    for node in graph.nodes:
        layer = norm_layer(graph, registry, node)
        if layer is None or edits.tensor_origin(layer.form.output) not in original.producers:
            continue
        if edits.lost_channels(node.inputs[layer.form.spec.input_slot], layer.form.spec.axis) \
                and not _absorbed(graph, registry, edits, layer.form.output):
            found.append(layer)
    return found


def _absorbed(graph: Graph, registry: Registry, edits: EditMap, tensor: str) -> bool:
    """Whether only linear layers read ``tensor``, as their activation, with input channels lost."""
    if tensor in graph.graph_output_names:
        return False
    for reader, _ in graph.consumers.get(tensor, []):
        layer = layer_named(graph, registry, reader.name)
        if layer is None or layer.input != tensor or not edits.lost_channels(tensor, layer.form.in_axis):
            return False
    return True
