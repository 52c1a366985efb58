"""Reconstruction-aware channel selection (ThiNet, He et al. 2017), solved greedily.

Each reader of a group (a node that contracts its channels: Conv, Gemm, MatMul)
is seen as a linear map ``y = W^T x`` over its input indices, with the input's
second moment ``H = E[x x^T]`` from calibration data. For a kxk convolution the
indices are the unfolded (im2col) columns its rule's matrix view declares
(``OpSpec.linear``), so a channel is a block of kxk columns; elsewhere they
are the input's channel indices. Removing the indices T
and re-fitting the remaining weights by least squares (what ``--recover``
does) leaves an output error of ``tr(W_T^T (P_TT)^-1 W_T)`` with ``P = H^-1``
(the Optimal Brain Surgeon identity). The greedy removes, step by step, the
channel whose removal adds the least error, then updates ``W`` and ``P`` as if
the remaining weights had been re-fitted (a Schur complement), so a channel
that the kept ones can rebuild (a linear combination of them) costs nothing
and goes first; a zero channel, or one no weight reads, too.

The score of a channel is the cumulative error at the moment it is removed:
the removal order, on the scale of the output error (relative to each
reader's output energy, so readers count equally). Lower goes first, so the
planner removes exactly the greedy's first channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIDGE = 1e-6  # relative to the mean input energy: keeps H invertible when channels are dependent
MAX_STEPS = 32  # the greedy removes channels in at most this many rounds (several per round on big groups)


@dataclass
class Reader:
    """A linear reader of a group's channels.

    ``blocks[k]``: the input indices group channel k occupies (empty if the reader
    does not see it); ``weights``: one row per input index (the weights reading
    it); ``gram``: E[x x^T] over the indices, or None where only its diagonal
    ``moment`` is known (then no re-fit is assumed: the error is additive).
    """

    blocks: list[np.ndarray]
    weights: np.ndarray
    moment: np.ndarray
    gram: np.ndarray | None = None


class _State:
    """One reader during elimination: compensated weights and inverse second moment,
    both shrunk to the indices still present (``pos`` maps an input index to its row)."""

    def __init__(self, reader: Reader):
        self.blocks = reader.blocks
        self.w = np.asarray(reader.weights, dtype=np.float64).copy()
        self.pos = np.arange(len(self.w))
        self.present = np.ones(len(self.w), dtype=bool)
        if reader.gram is not None:
            h = np.asarray(reader.gram, dtype=np.float64)
            ridge = RIDGE * max(float(np.mean(np.diag(h))), 1e-12)
            self.p = np.linalg.inv(h + ridge * np.eye(len(h)))
            energy = float(((h @ self.w) * self.w).sum())
            self.diag = None
        else:
            self.p = None
            self.diag = np.asarray(reader.moment, dtype=np.float64)
            energy = float((self.diag[:, None] * self.w ** 2).sum())
        self.scale = 1.0 / energy if energy > 0 else 0.0

    def costs(self, channels: list[int]) -> np.ndarray:
        """Output error each channel's removal would add now (relative to the reader's energy)."""
        out = np.zeros(len(channels))
        if not self.scale:
            return out
        blocks = [self.pos[self.blocks[k]] for k in channels]
        sizes = {len(b) for b in blocks}
        if self.p is None:
            for i, k in enumerate(channels):
                out[i] = float((self.diag[self.blocks[k], None] * self.w[blocks[i]] ** 2).sum())
        elif len(sizes) == 1 and 0 not in sizes:  # one batched solve for all channels
            idx = np.stack(blocks)  # [channels, b]
            w = self.w[idx]  # [channels, b, m]
            p = self.p[idx[:, :, None], idx[:, None, :]]  # [channels, b, b]
            out = np.sum(w * np.linalg.solve(p, w), axis=(1, 2))
        else:
            for i, b in enumerate(blocks):
                if len(b):
                    wb = self.w[b]
                    out[i] = float(np.sum(wb * np.linalg.solve(self.p[np.ix_(b, b)], wb)))
        return out * self.scale

    def remove(self, channels: list[int]) -> None:
        """Drop the channels' indices; the rest of the weights take over what they did (re-fit)."""
        gone = np.concatenate([self.blocks[k] for k in channels]) if channels else np.empty(0, np.int64)
        b = self.pos[gone]
        if not len(b):
            return
        if self.p is not None:
            pb = self.p[:, b]
            q = np.linalg.inv(self.p[np.ix_(b, b)])
            self.w -= pb @ (q @ self.w[b])
            self.p -= pb @ (q @ pb.T)
            self.p = np.delete(np.delete(self.p, b, axis=0), b, axis=1)
        self.w = np.delete(self.w, b, axis=0)
        self.present[gone] = False
        self.pos = np.where(self.present, np.cumsum(self.present) - 1, -1)


def greedy_scores(readers: list[Reader], size: int, max_steps: int = MAX_STEPS) -> np.ndarray:
    """One score per group channel: the cumulative re-fitted output error when the greedy removes it."""
    states = [_State(r) for r in readers]
    alive = list(range(size))
    scores = np.zeros(size)
    removal_rank = np.zeros(size)
    total = 0.0
    per_round = max(1, -(-size // max_steps))
    rank = 0
    while alive:
        costs = sum((s.costs(alive) for s in states), np.zeros(len(alive)))
        order = np.argsort(costs, kind="stable")[:per_round]
        chosen = [alive[i] for i in order]
        for i, k in zip(order, chosen):
            total += max(costs[i], 0.0)
            scores[k] = total
            rank += 1
            removal_rank[k] = rank
        for s in states:
            s.remove(chosen)
        gone = set(chosen)
        alive = [k for k in alive if k not in gone]
    tie = (scores.max() if scores.max() > 0 else 1.0) * 1e-9  # strictly increasing in removal order
    return scores + tie * removal_rank
