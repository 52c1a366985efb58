"""Gather / Scatter families: the indexed axis is positions (nodes, edges, tokens), the rest pass through.

Graph networks (GCN message passing), embeddings and RNN state selection
(``h_n[-1]``) index one axis and carry the others unchanged. The indexed
axes never prune (the indices name positions there, not channels); every
other axis couples data, output, updates and, where they share it
elementwise (GatherElements, ScatterElements), the indices.
"""
from __future__ import annotations

from onnxprune.mapping import Affine
from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec, Port

from ._common import unknown_shape

DATA, INDICES, UPDATES = IN(0), IN(1), IN(2)


def _shift(axes, delta):
    return tuple(a + delta for a in axes)


def _gather(view: NodeView, port: Port, axes):
    """out = data.shape[:axis] + indices.shape + data.shape[axis+1:]."""
    rank, q = view.rank(DATA), view.rank(INDICES)
    if rank is None or q is None:
        return unknown_shape(view, DATA)
    axis = int(view.attr("axis", 0)) % rank
    if port == INDICES:
        return Barrier("indices are positions, not channels")
    if port == DATA:
        if axis in axes:
            return _select(view, axes, axis, q)
        return [Couple(OUT(0), tuple(a if a < axis else a + q - 1 for a in axes))]
    if any(axis <= a < axis + q for a in axes):
        return Barrier("output axes come from the indices")
    return [Couple(DATA, tuple(a if a < axis else a - q + 1 for a in axes))]


def _select(view: NodeView, axes, axis: int, q: int):
    """A constant scalar index picks one slice: data flat index ``i*inner + j`` is output ``j``
    (e.g. ``h_n[0]`` of a bidirectional RNN state pruned along [dirs, hidden])."""
    index, shape = view.const(1), view.shape(DATA)
    if q != 0 or index is None or shape is None or axis != min(axes):
        return Barrier(f"gathered along axis {axis}")
    inner = 1
    for a in axes:
        if a != axis:
            inner *= shape[a]
    picked = int(index) % shape[axis]
    rest = tuple(a - 1 for a in axes if a != axis)
    if not rest:  # q, k, v = qkv[0], qkv[1], qkv[2]: the other slices go to other Gathers, this one stays whole
        return Barrier(f"a constant index picks one slice of axis {axis}: that slice cannot lose channels")
    return [Couple(OUT(0), rest, Affine(picked * inner).inverse())]


def _elementwise_indexed(view: NodeView, port: Port, axes, ports: tuple[Port, ...]):
    """GatherElements / ScatterElements: every port has the data's rank; all share the non-indexed axes."""
    rank = view.rank(DATA)
    if rank is None:
        return unknown_shape(view, DATA)
    axis = int(view.attr("axis", 0)) % rank
    if axis in axes:
        return Barrier(f"indexed along axis {axis}")
    return [Couple(p, axes) for p in ports if p != port and view.tensor(p)]


def _gather_elements(view, port, axes):
    return _elementwise_indexed(view, port, axes, (DATA, INDICES, OUT(0)))


def _scatter_elements(view, port, axes):
    return _elementwise_indexed(view, port, axes, (DATA, INDICES, UPDATES, OUT(0)))


def _index_depth(view: NodeView) -> int | None:
    shape = view.shape(INDICES)
    return None if shape is None else int(shape[-1])


def _gather_nd(view: NodeView, port: Port, axes):
    """out = indices.shape[:-1] + data.shape[batch_dims + k:]; only those trailing data axes pass."""
    q, k, b = view.rank(INDICES), _index_depth(view), int(view.attr("batch_dims", 0))
    if q is None or k is None:
        return unknown_shape(view, INDICES)
    if port == INDICES:
        return Barrier("indices are positions, not channels")
    first = b + k  # first data axis that passes through
    if port == DATA:
        if min(axes) < first:
            return Barrier("indexed or batch axes")
        return [Couple(OUT(0), _shift(axes, q - 1 - first))]
    if min(axes) < q - 1:
        return Barrier("output axes come from the indices")
    return [Couple(DATA, _shift(axes, first - q + 1))]


def _scatter_nd(view: NodeView, port: Port, axes):
    """updates = indices.shape[:-1] + data.shape[k:]; data, output and updates share data axes >= k."""
    q, k = view.rank(INDICES), _index_depth(view)
    if q is None or k is None:
        return unknown_shape(view, INDICES)
    if port == INDICES:
        return Barrier("indices are positions, not channels")
    if port == UPDATES:
        if min(axes) < q - 1:
            return Barrier("update rows are positions")
        data_axes = _shift(axes, k - q + 1)
        return [Couple(DATA, data_axes), Couple(OUT(0), data_axes)]
    if min(axes) < k:
        return Barrier(f"scattered along axes < {k}")
    others = [Couple(p, axes) for p in (DATA, OUT(0)) if p != port]
    return others + [Couple(UPDATES, _shift(axes, q - 1 - k))]


def register(registry) -> None:
    registry.register(OpSpec(("Gather",), _gather, family="indexing"))
    registry.register(OpSpec(("GatherElements",), _gather_elements, family="indexing"))
    registry.register(OpSpec(("ScatterElements", "Scatter"), _scatter_elements, family="indexing"))
    registry.register(OpSpec(("GatherND",), _gather_nd, family="indexing"))
    registry.register(OpSpec(("ScatterND",), _scatter_nd, family="indexing"))
