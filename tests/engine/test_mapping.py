"""Index mappings: each class's pairs, and the algebra grouping relies on."""
import numpy as np
import pytest

from onnxprune.mapping import (IDENTITY, Affine, Compose, Identity, Inverse, Modulo, Overlap, Project,
                               Reorder, compose)

# (mapping, n_a, n_b) where every channel of A has at least one partner in B
TOTAL = [
    (Identity(), 6, 6),
    (Affine(0), 4, 10),
    (Affine(3), 4, 10),
    (Affine(6, 1), 4, 10),
    (Modulo(3), 12, 3),
    (Overlap(4, 1), 3, 12),
    (Overlap(1, 4), 12, 3),
    (Overlap(2, 3), 6, 4),
    (Overlap(3, 2), 4, 6),
    (Reorder((2, 3, 4), (2, 0, 1)), 24, 24),
    (Project((2, 3), 1), 6, 6),
    (Compose(Affine(2), Modulo(4), 8), 5, 4),
]


def as_set(pairs):
    return set(zip(pairs[0].tolist(), pairs[1].tolist()))


def subsets(n, count=5, seed=0):
    rng = np.random.default_rng(seed)
    return [np.flatnonzero(rng.random(n) < 0.4) for _ in range(count)] + [np.arange(n), np.array([0])]


# ------------------------------------------------------------- each class
def test_identity_pairs_and_size_check():
    a, b = Identity().pairs(5, 5)
    assert a.tolist() == b.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="5 and 6"):
        Identity().pairs(5, 6)


def test_affine_offsets_and_drops_out_of_range():
    assert as_set(Affine(3).pairs(4, 10)) == {(0, 3), (1, 4), (2, 5), (3, 6)}
    assert as_set(Affine(0, 2).pairs(4, 10)) == {(0, 0), (1, 2), (2, 4), (3, 6)}
    # a Concat's second input (offset 8) of size 4 into a size-10 output: only 2 fit
    assert as_set(Affine(8).pairs(4, 10)) == {(0, 8), (1, 9)}
    assert Affine(2).forward([0, 1], 4, 10).tolist() == [2, 3]
    assert Affine(2).backward([2, 3, 9], 4, 10).tolist() == [0, 1]


def test_modulo_groups_channels_by_period():
    m = Modulo(3)
    assert m.forward([0, 4], 9, 3).tolist() == [0, 1]
    assert m.backward([1], 9, 3).tolist() == [1, 4, 7]


@pytest.mark.parametrize("hw", [1, 4, 16])
def test_overlap_hw_1_is_flatten(hw):
    """Channel c of [C,H,W] is features c*HW .. c*HW+HW-1 of the flattened vector."""
    c = 5
    a, b = Overlap(hw, 1).pairs(c, c * hw)
    flat_channel = np.arange(c * hw).reshape(c, hw)  # numpy's own flatten
    expected = {(ch, int(f)) for ch in range(c) for f in flat_channel[ch]}
    assert as_set((a, b)) == expected
    assert Overlap(hw, 1).forward([2], c, c * hw).tolist() == flat_channel[2].tolist()


def test_overlap_depthwise_multiplier_and_unaligned_blocks():
    # depthwise multiplier 3: input channel i feeds outputs 3i..3i+2
    assert Overlap(1, 3).inverse().forward([1], 2, 6).tolist() == [3, 4, 5]
    # blocks of 2 vs 3 on a flat axis of 6: spans [0,2),[2,4),[4,6) vs [0,3),[3,6)
    assert as_set(Overlap(2, 3).pairs(3, 2)) == {(0, 0), (1, 0), (1, 1), (2, 1)}
    assert as_set(Overlap(3, 2).pairs(2, 3)) == {(0, 0), (0, 1), (1, 1), (1, 2)}
    with pytest.raises(ValueError):
        Overlap(2, 1).pairs(3, 7)


@pytest.mark.parametrize("sizes,order", [((2, 3), (1, 0)), ((2, 3, 4), (2, 0, 1)), ((3, 1, 5), (1, 2, 0)),
                                         ((4,), (0,))])
def test_reorder_is_the_transpose_of_an_arange(sizes, order):
    a, b = Reorder(sizes, order).pairs(0, 0)
    n = int(np.prod(sizes))
    assert sorted(a.tolist()) == list(range(n)) and sorted(b.tolist()) == list(range(n))  # bijection
    transposed = np.arange(n).reshape(sizes).transpose(order).ravel()
    assert np.array_equal(transposed[b], a)  # B's slot b holds A's element a


def test_project_ties_rows():
    """sizes (2, 3) pruned along axis 1: element (0, j) and (1, j) go together."""
    m = Project((2, 3), 1)
    assert as_set(m.pairs(6, 6)) == {(0, 0), (1, 1), (2, 2), (3, 0), (4, 1), (5, 2)}
    assert m.backward(m.forward([4], 6, 6), 6, 6).tolist() == [1, 4]
    assert Project((3, 2), 0).backward([0, 2], 6, 6).tolist() == [0, 1, 2, 3]


def test_inverse_swaps_pairs_and_inverts_back():
    m = Affine(2)
    a, b = m.pairs(3, 6)
    ia, ib = Inverse(m).pairs(6, 3)
    assert as_set((ia, ib)) == as_set((b, a))
    assert m.inverse().inverse() is m


def test_compose_chains_and_needs_the_middle_size():
    m = Compose(Affine(2), Modulo(4), 8)  # a -> a + 2 -> (a + 2) % 4
    assert as_set(m.pairs(5, 4)) == {(0, 2), (1, 3), (2, 0), (3, 1), (4, 2)}
    with pytest.raises(ValueError, match="middle size"):
        Compose(Affine(2), Modulo(4)).pairs(5, 4)
    assert compose(IDENTITY, Modulo(4), 8) == Modulo(4)
    assert compose(Affine(1), IDENTITY, 8) == Affine(1)
    assert as_set(Affine(1).then(Modulo(2), 4).pairs(3, 2)) == {(0, 1), (1, 0), (2, 1)}
    assert Identity().then(Modulo(2), 4) == Modulo(2)


def test_compose_of_fan_out_mappings_keeps_every_path():
    m = Compose(Overlap(1, 2), Overlap(1, 3).inverse(), 2)  # 4 -> 2 -> 6
    assert as_set(m.pairs(4, 6)) == {(a, b) for a in range(4) for b in range(6) if a // 2 == b // 3}


# ------------------------------------------------------------- properties
@pytest.mark.parametrize("m,n_a,n_b", TOTAL, ids=lambda v: repr(v)[:40])
def test_backward_of_forward_covers_the_set(m, n_a, n_b):
    for s in subsets(n_a):
        back = m.backward(m.forward(s, n_a, n_b), n_a, n_b)
        assert set(s.tolist()) <= set(back.tolist()), (m, s)


@pytest.mark.parametrize("m,n_a,n_b", TOTAL, ids=lambda v: repr(v)[:40])
def test_double_inverse_has_the_same_pairs(m, n_a, n_b):
    assert as_set(Inverse(Inverse(m)).pairs(n_a, n_b)) == as_set(m.pairs(n_a, n_b))
    assert as_set(m.inverse().inverse().pairs(n_a, n_b)) == as_set(m.pairs(n_a, n_b))


@pytest.mark.parametrize("m,n_a,n_b", TOTAL, ids=lambda v: repr(v)[:40])
def test_inverse_swaps_forward_and_backward(m, n_a, n_b):
    for s in subsets(n_b, seed=1):
        assert np.array_equal(m.inverse().forward(s, n_b, n_a), m.backward(s, n_a, n_b))


@pytest.mark.parametrize("m,n_a,n_b", TOTAL, ids=lambda v: repr(v)[:40])
def test_compose_with_identity_is_neutral(m, n_a, n_b):
    pairs = as_set(m.pairs(n_a, n_b))
    assert as_set(Compose(Identity(), m, n_a).pairs(n_a, n_b)) == pairs
    assert as_set(Compose(m, Identity(), n_b).pairs(n_a, n_b)) == pairs


@pytest.mark.parametrize("m,n_a,n_b", TOTAL, ids=lambda v: repr(v)[:40])
def test_forward_and_backward_stay_in_range_and_sorted(m, n_a, n_b):
    f = m.forward(np.arange(n_a), n_a, n_b)
    b = m.backward(np.arange(n_b), n_a, n_b)
    assert f.dtype == np.int64 and b.dtype == np.int64
    assert np.all((f >= 0) & (f < n_b)) and np.all((b >= 0) & (b < n_a))
    assert np.array_equal(f, np.unique(f)) and np.array_equal(b, np.unique(b))


def test_empty_selection_maps_to_nothing():
    for m, n_a, n_b in TOTAL:
        assert m.forward([], n_a, n_b).size == 0
        assert m.backward([], n_a, n_b).size == 0


def test_mappings_are_hashable_values():
    """Edges store mappings; equal parameters must compare equal (frozen dataclasses)."""
    assert Affine(3) == Affine(3) and Affine(3) != Affine(4)
    assert len({Modulo(2), Modulo(2), Overlap(4, 1), Overlap(4, 1)}) == 2
