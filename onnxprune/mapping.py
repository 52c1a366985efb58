"""Index mappings between two pruning ends: pure, composable, invertible.

A mapping relates the channels of end A to the channels of end B as a list of
coupled pairs: removing A's channel ``a`` requires removing B's channel ``b``
for every pair ``(a, b)`` (and vice versa). ``forward`` and ``inverse`` give
set images, which is what grouping by graph search composes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Pairs = tuple[np.ndarray, np.ndarray]


def _arange(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


class Mapping:
    """Base class: subclasses implement :meth:`pairs`."""

    def pairs(self, n_a: int, n_b: int) -> Pairs:
        raise NotImplementedError

    def forward(self, idx, n_a: int, n_b: int) -> np.ndarray:
        a, b = self.pairs(n_a, n_b)
        return np.unique(b[np.isin(a, np.asarray(idx, dtype=np.int64))])

    def backward(self, idx, n_a: int, n_b: int) -> np.ndarray:
        a, b = self.pairs(n_a, n_b)
        return np.unique(a[np.isin(b, np.asarray(idx, dtype=np.int64))])

    def inverse(self) -> "Mapping":
        return Inverse(self)

    def then(self, other: "Mapping", n_mid: int) -> "Mapping":
        """This mapping followed by ``other``; a Compose cannot compute pairs without ``n_mid``."""
        return compose(self, other, n_mid)


@dataclass(frozen=True)
class Identity(Mapping):
    """Channel k of A is channel k of B (elementwise ops, shared tensors)."""

    def pairs(self, n_a, n_b):
        if n_a != n_b:
            raise ValueError(f"identity mapping between ends of size {n_a} and {n_b}")
        return _arange(n_a), _arange(n_a)


@dataclass(frozen=True)
class Affine(Mapping):
    """A's channel j is B's channel ``offset + step * j`` (Concat input, Slice output)."""

    offset: int = 0
    step: int = 1

    def pairs(self, n_a, n_b):
        a = _arange(n_a)
        b = self.offset + self.step * a
        keep = (b >= 0) & (b < n_b)
        return a[keep], b[keep]


@dataclass(frozen=True)
class Modulo(Mapping):
    """A's channel c is B's channel ``c % period`` (grouped conv input vs weight axis 1)."""

    period: int

    def pairs(self, n_a, n_b):
        a = _arange(n_a)
        return a, a % self.period


@dataclass(frozen=True)
class Overlap(Mapping):
    """A's channel i spans ``block_a`` slots of a shared flat axis, B's spans ``block_b``.

    Pairs are the channels whose spans overlap. Flatten (one channel = H*W
    features) is ``Overlap(H*W, 1)``; a depthwise conv with multiplier m is
    ``Overlap(m, 1)`` from input to output channels.
    """

    block_a: int
    block_b: int

    def pairs(self, n_a, n_b):
        if n_a * self.block_a != n_b * self.block_b:
            raise ValueError(f"overlap mapping: {n_a}x{self.block_a} != {n_b}x{self.block_b}")
        if self.block_a >= self.block_b:
            per = self.block_a // self.block_b if self.block_a % self.block_b == 0 else None
            if per is not None:
                b = _arange(n_b)
                return b // per, b
        elif self.block_b % self.block_a == 0:
            per = self.block_b // self.block_a
            a = _arange(n_a)
            return a, a // per
        a_list, b_list = [], []
        for i in range(n_a):
            lo, hi = i * self.block_a, (i + 1) * self.block_a
            first, last = lo // self.block_b, (hi - 1) // self.block_b
            for j in range(first, last + 1):
                a_list.append(i)
                b_list.append(j)
        return np.asarray(a_list, dtype=np.int64), np.asarray(b_list, dtype=np.int64)


@dataclass(frozen=True)
class Reorder(Mapping):
    """A flattens ``sizes`` in the given axis order; B flattens them in ``order``.

    Used when an end spans several axes in an order other than the tensor's
    own (Transpose), so every end of a tensor can index it the same way.
    """

    sizes: tuple[int, ...]
    order: tuple[int, ...]

    def pairs(self, n_a, n_b):
        a = _arange(int(np.prod(self.sizes)))
        coords = np.unravel_index(a, self.sizes)
        b = np.ravel_multi_index(tuple(coords[k] for k in self.order),
                                 tuple(self.sizes[k] for k in self.order))
        return a, b.astype(np.int64)


@dataclass(frozen=True)
class Inverse(Mapping):
    inner: Mapping

    def pairs(self, n_a, n_b):
        b, a = self.inner.pairs(n_b, n_a)
        return a, b

    def inverse(self):
        return self.inner


@dataclass(frozen=True)
class Compose(Mapping):
    """A -> (middle) -> B; the middle end's size is inferred from the first mapping."""

    first: Mapping
    second: Mapping
    n_mid: int | None = None

    def pairs(self, n_a, n_b):
        n_mid = self.n_mid
        if n_mid is None:
            raise ValueError("Compose needs the middle size; use compose(m1, m2, n_mid)")
        a1, m1 = self.first.pairs(n_a, n_mid)
        m2, b2 = self.second.pairs(n_mid, n_b)
        order = np.argsort(m2, kind="stable")
        m2s, b2s = m2[order], b2[order]
        lo = np.searchsorted(m2s, m1, side="left")
        hi = np.searchsorted(m2s, m1, side="right")
        counts = hi - lo
        a = np.repeat(a1, counts)
        b = np.concatenate([b2s[l:h] for l, h in zip(lo, hi)]) if len(a1) else np.empty(0, np.int64)
        return a, b.astype(np.int64)


def compose(first: Mapping, second: Mapping, n_mid: int) -> Mapping:
    if isinstance(first, Identity):
        return second
    if isinstance(second, Identity):
        return first
    return Compose(first, second, n_mid)


IDENTITY = Identity()


def dense_axis(sizes: tuple[int, ...]) -> int:
    """The axis a multi-axis end prunes along: the largest (innermost on ties).

    Sizes survive transposes, so every end of a Reshape-Transpose-Reshape
    chain picks the same logical axis (the channels within a shuffle group,
    not the groups).
    """
    best = max(sizes)
    return max(k for k, s in enumerate(sizes) if s == best)


@dataclass(frozen=True)
class Project(Mapping):
    """Ties every channel of a multi-axis end to the one sharing its coordinate on ``axis``.

    A tensor pruned along several merged axes (e.g. [groups, channels] inside a
    channel shuffle) stays dense only if the same positions go in every row;
    this self-mapping makes the rows prune together.
    """

    sizes: tuple[int, ...]
    axis: int

    def pairs(self, n_a, n_b):
        a = _arange(int(np.prod(self.sizes)))
        coords = list(np.unravel_index(a, self.sizes))
        for k in range(len(self.sizes)):
            if k != self.axis:
                coords[k] = np.zeros_like(coords[k])
        return a, np.ravel_multi_index(tuple(coords), self.sizes).astype(np.int64)


@dataclass(frozen=True)
class Marginal(Mapping):
    """A's channels flatten ``sizes``; B flattens only the axes in ``keep`` (same order).

    Where an operator drops some of an end's axes (a batched MatMul contracts
    head_dim but keeps the head axis), A's channel pairs with the B channel
    at its kept coordinates: all of A's channels sharing them go together.
    """

    sizes: tuple[int, ...]
    keep: tuple[int, ...]

    def pairs(self, n_a, n_b):
        a = _arange(int(np.prod(self.sizes)))
        coords = np.unravel_index(a, self.sizes)
        kept = tuple(coords[k] for k in self.keep)
        return a, np.ravel_multi_index(kept, tuple(self.sizes[k] for k in self.keep)).astype(np.int64)
