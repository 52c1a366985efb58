"""Gather / Scatter rules (opspecs/indexing.py): indexed axes are positions, the others pass through."""
import numpy as np
import pytest

from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph

N, E, F = 6, 9, 8


def _features(b):
    """Node features [N, F] from a Gemm, so the feature axis has a root."""
    return b.relu(b.gemm(b.input("x", [N, 5]), F))


def _head(b, y):
    b.output(b.rename(b.gemm(y, 3), "output"))


def _indices(b, shape, high, seed=0):
    return b.const(np.random.default_rng(seed).integers(0, high, shape).astype(np.int64))


def test_gather_rows_keeps_feature_axis():
    b = GraphBuilder()
    h = _features(b)
    _head(b, b.op("Gather", [h, _indices(b, [E], N)], axis=0))
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    assert dg.group_of("Gemm_0").prunable


def test_gather_of_2d_indices_and_embedding_table():
    b = GraphBuilder()
    table = b.param([20, F])
    y = b.op("Gather", [table, _indices(b, [2, 4], 20)], axis=0)  # [2, 4, F]
    y = b.op("Reshape", [y, b.const(np.asarray([8, F], dtype=np.int64))])
    _head(b, b.op("MatMul", [b.relu(b.gemm(y, 6)), b.param([6, 4])]))
    assert_all_groups_oracle(b.build(), min_groups=1)


def test_gather_along_the_channel_axis_is_a_barrier():
    b = GraphBuilder()
    h = _features(b)
    _head(b, b.op("Gather", [h, _indices(b, [5], F)], axis=1))
    dg = depgraph(b.build())
    group = dg.group_of("Gemm_0")
    assert not group.prunable and any("gathered along axis 1" in r for r in group.blocked)


def test_scalar_index_selects_one_slice():
    """h[1] of [2, N, F] reached along (0, 2) jointly: an Affine offset picks the slice."""
    b = GraphBuilder()
    h = b.op("Reshape", [b.gemm(b.input("x", [N, 5]), 2 * F), b.const(np.asarray([N, 2, F], dtype=np.int64))])
    h = b.op("Transpose", [h], perm=[1, 0, 2])  # [2, N, F]
    _head(b, b.op("Gather", [h, b.const(np.asarray(1, dtype=np.int64))], axis=0))
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    group = dg.group_of("Gemm_0")
    assert group.size == F  # channel j is column j of both slices


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_scatter_elements_message_passing(reduction):
    b = GraphBuilder(opset=18)
    h = _features(b)
    msg = b.op("Gather", [h, _indices(b, [E], N, seed=1)], axis=0)  # [E, F] messages from source nodes
    rng = np.random.default_rng(2)
    if reduction == "none":  # distinct destinations, one message each
        msg = b.op("Slice", [msg, b.const(np.asarray([0], dtype=np.int64)), b.const(np.asarray([N], dtype=np.int64)),
                             b.const(np.asarray([0], dtype=np.int64))])
        rows = rng.permutation(N).reshape(N, 1)
    else:
        rows = rng.integers(0, N, (E, 1))
    dst = b.const(np.repeat(rows, F, axis=1).astype(np.int64))
    agg = b.op("ScatterElements", [b.relu(b.gemm(h, F)), dst, msg], axis=0, reduction=reduction)
    _head(b, agg)
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    group = dg.group_of("ScatterElements_0")
    assert group.prunable and any(e.tensor == dst and e.axes == (1,) for e in group.ends)


def test_gather_elements_couples_indices_along_features():
    b = GraphBuilder()
    h = _features(b)
    idx = b.const(np.random.default_rng(0).integers(0, N, (N, F)).astype(np.int64))
    _head(b, b.op("GatherElements", [h, idx], axis=0))
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    group = dg.group_of("Gemm_0")
    assert any(e.tensor == idx and e.axes == (1,) for e in group.ends)


def test_gather_nd_and_scatter_nd_pass_trailing_axes():
    b = GraphBuilder()
    h = _features(b)
    rows = b.op("GatherND", [h, _indices(b, [E, 1], N, seed=4)])  # [E, F]
    upd = b.relu(b.gemm(rows, F))
    idx = b.const(np.random.default_rng(5).permutation(N)[:4].reshape(4, 1).astype(np.int64))
    upd = b.op("Slice", [upd, b.const(np.asarray([0], dtype=np.int64)), b.const(np.asarray([4], dtype=np.int64)),
                         b.const(np.asarray([0], dtype=np.int64))])
    _head(b, b.op("ScatterND", [b.relu(b.gemm(h, F)), idx, upd]))
    dg = assert_all_groups_oracle(b.build(), min_groups=2)
    assert dg.group_of("ScatterND_0").prunable
