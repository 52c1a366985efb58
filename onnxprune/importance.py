"""Group-level importance: one score per group channel, aggregated over every
end of the group (DepGraph), so a channel is kept if any member needs it.

A criterion takes a :class:`~onnxprune.scoring.ScoringContext` and a group and
returns one non-negative score per group channel; lower goes first. Scores
only need to rank channels within their group: the planner puts every
group's scores on one scale (divided by the group mean) before any ranking
across groups. Data-driven criteria also say which tensors they need
(``needs``), so the planner collects them for all groups in one pass.

Readers of a group are found from the dependency graph alone, with no
operator names: a node *contracts* the group's channels when a data input
and a constant (its weight) are in the group but none of its outputs is
(Conv/Gemm/MatMul reading the channels; a BatchNorm or Add keeps them on its
output and so does not contract). The weight rows at the group's indices are
what reads each channel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import weights
from .depgraph import DependencyGraph, End, EndKind, Group
from .read_weights import WeightValues, score_ends
from .rules import Side
from .scoring import Collect, Need, ScoringContext, index_rows, linear_form, unfolded_need
from .selection import Reader, greedy_scores

MAX_GRAM = 2048  # readers with wider inputs (a Gemm after a Flatten) use only E[x_i^2], not E[x x^T]

ScoreFn = Callable[[ScoringContext, Group], np.ndarray]
NeedsFn = Callable[[ScoringContext, Group], list[Need]]


@dataclass(frozen=True)
class Criterion:
    """A scoring function, and for data-driven ones the statistics it reads."""

    score: ScoreFn
    needs: NeedsFn | None = None
    doc: str = ""

    @property
    def data_driven(self) -> bool:
        return self.needs is not None

    def __call__(self, ctx: ScoringContext, group: Group) -> np.ndarray:
        return self.score(ctx, group)


# ------------------------------------------------------------------ helpers
def _param_rows(dg: DependencyGraph, end: End) -> np.ndarray:
    """The parameter as a 2D array: one row per index of the end's (flattened) axes; quantized
    codes as the values their reader computes with (a channel's scale counts, its zero point not)."""
    return _with_weight(dg, None, end.tensor, lambda value: index_rows(value, end.axes))


def _with_weight(dg: DependencyGraph, values: WeightValues | None, tensor: str, use):
    """``use`` of a weight as its layer computes with it: a parameter decoded by its reader
    (quantized codes), or a tensor computed from parameters alone (a cast, a dequantization)
    evaluated. A mapped parameter's pages, read once for its score, go back after ``use``
    (released before, the pages ``use`` reads would stay: a 1B model's every weight resident)."""
    if tensor not in dg.graph.params:
        return use(values(tensor))
    try:
        return use(dg.real_value(tensor))
    finally:
        weights.release(dg.graph.params[tensor])


def _scored_params(dg: DependencyGraph, group: Group) -> list[End]:
    """The group's parameters that hold weights (scales and zero points describe other parameters)."""
    return [e for e in group.ends if e.kind == EndKind.PARAM and not dg.is_quant_param(e.tensor)]


def _per_channel(group: Group, end: End, per_index: np.ndarray) -> np.ndarray:
    """Sum a per-index quantity over each group channel's indices at ``end``."""
    slots = group.slots.get(end)
    return slots.sum_per_channel(per_index) if slots is not None else np.zeros(group.size)


def _sum_of_members(members: list[np.ndarray]) -> np.ndarray:
    """Each member divided by its mean, then summed: every member counts equally, whatever its scale."""
    total = np.zeros(len(members[0])) if members else np.zeros(0)
    for score in members:
        mean = score.mean()
        if mean > 0:
            total = total + score / mean
    return total


def _norm_score(dg: DependencyGraph, group: Group, power: int, ends=None) -> np.ndarray:
    """Sum of |w|^power over each channel's weights, per member (the weights as layers read them, in
    float: a cast fp16 weight, a dequantized int8 one, quantized codes decoded; see read_weights and
    DependencyGraph.real_value), members weighted equally; scales and zero points are not weights."""
    members = [e for e in score_ends(dg, group) if not dg.is_quant_param(e.tensor)] if ends is None else ends
    values = WeightValues(dg.graph)
    per_member = [_per_channel(group, end, _with_weight(dg, values, end.tensor,
                                                        lambda value: _row_norms(value, end.axes, power)))
                  for end in members]
    return _sum_of_members(per_member) if per_member else np.zeros(group.size)


def _row_norms(value: np.ndarray, axes: tuple[int, ...], power: int) -> np.ndarray:
    """Sum of |w|^power over each row of ``index_rows(value, axes)``, accumulated in float64.

    A float32 weight is not converted to float64 as a whole first: the squares are summed by
    einsum, which casts in small buffers (a 1B-parameter model's weights are read once, not
    copied twice more)."""
    value = np.asarray(value)
    if value.dtype not in (np.float32, np.float64):
        value = value.astype(np.float64)
    moved = np.moveaxis(value, list(axes), list(range(len(axes))))
    rows = moved.reshape(int(np.prod([value.shape[a] for a in axes])), -1)
    if power == 2:
        return np.einsum("ij,ij->i", rows, rows, dtype=np.float64, casting="safe")
    magnitudes = np.abs(rows) if power == 1 else np.abs(rows.astype(np.float64)) ** power
    return magnitudes.sum(axis=1, dtype=np.float64)


def roles_in(dg: DependencyGraph, group: Group, role: str) -> list[End]:
    """Parameter ends of the group that some rule declares with ``role`` (e.g. bn_scale)."""
    found = []
    for end in group.ends:
        if end.kind != EndKind.PARAM:
            continue
        for node, slot in dg.graph.consumers.get(end.tensor, []):
            spec = dg.spec(node.name)
            if spec is not None and spec.param_roles.get(slot) == role:
                found.append(end)
                break
    return found


@dataclass(frozen=True)
class Contraction:
    """A node that mixes the group's channels away: ``data`` is the input it reads
    them on, ``weights`` the group's parameter ends it reads them with."""

    node: str
    data: End
    weights: tuple[End, ...]


def contractions(dg: DependencyGraph, group: Group) -> list[Contraction]:
    """The group's readers: nodes with a data input and a weight in the group and no output in it."""
    graph = dg.graph
    ends_of: dict[str, list[End]] = {}
    for end in group.ends:
        if end.kind == EndKind.OP:
            ends_of.setdefault(end.node, []).append(end)
    weights_of: dict[str, list[End]] = {}
    for end in _scored_params(dg, group):
        for node, _slot in graph.consumers.get(end.tensor, []):
            weights_of.setdefault(node.name, []).append(end)
    found = []
    for node, ends in ends_of.items():
        if any(e.port.side == Side.OUT for e in ends) or node not in weights_of:
            continue
        data = [e for e in ends if e.port.side == Side.IN and e.tensor not in graph.params]
        if data:
            found.append(Contraction(node, data[0], tuple(dict.fromkeys(weights_of[node]))))
    return found


def produced_ends(dg: DependencyGraph, group: Group) -> list[End]:
    """One end per tensor the group's channels are produced on (node outputs, not constants)."""
    seen, ends = set(), []
    for end in group.ends:
        if end.kind == EndKind.OP and end.port.side == Side.OUT and (end.tensor, end.axes) not in seen:
            seen.add((end.tensor, end.axes))
            ends.append(end)
    return ends


def read_ends(dg: DependencyGraph, group: Group) -> list[End]:
    """The tensors the group's channels are read on by the next layers (one end each);
    where nothing contracts them, every tensor they are produced on."""
    seen, ends = set(), []
    for c in contractions(dg, group):
        if (c.data.tensor, c.data.axes) not in seen:
            seen.add((c.data.tensor, c.data.axes))
            ends.append(c.data)
    return ends or produced_ends(dg, group)


def weight_energy(dg: DependencyGraph, group: Group, contraction: Contraction) -> np.ndarray | None:
    """Squared norm of the weight row reading each index of the data end (None if the
    group's indices at data and weight cannot be paired one to one)."""
    n = dg.size(contraction.data)
    energy = np.zeros(n)
    for weight in contraction.weights:
        rows = (_param_rows(dg, weight) ** 2).sum(axis=1)
        paired = _paired(group, contraction.data, weight)
        if paired is None:
            return None
        at_data, at_weight = paired
        np.add.at(energy, at_data, rows[at_weight])
    return energy


def _paired(group: Group, data: End, weight: End) -> tuple[np.ndarray, np.ndarray] | None:
    """The group's indices at ``data`` and at ``weight``, paired one to one channel by channel
    (empty where the group lacks either end), or None where a channel holds unequal counts."""
    a, b = group.slots.get(data), group.slots.get(weight)
    if a is None or b is None:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if not np.array_equal(a.start, b.start):
        return None
    return a.index, b.index


# ------------------------------------------------------------------ weight-only criteria
def l1(ctx: ScoringContext, group: Group) -> np.ndarray:
    return _norm_score(ctx.dg, group, 1)


def l2(ctx: ScoringContext, group: Group) -> np.ndarray:
    return _norm_score(ctx.dg, group, 2)


def bn_scale(ctx: ScoringContext, group: Group) -> np.ndarray:
    """Network Slimming: |gamma| of the group's BatchNorm scales (L2 if it has none)."""
    ends = roles_in(ctx.dg, group, "bn_scale")
    return _norm_score(ctx.dg, group, 1, ends) if ends else l2(ctx, group)


def random(ctx: ScoringContext, group: Group) -> np.ndarray:
    return ctx.rng.random(group.size)


# ------------------------------------------------------------------ data-driven criteria
def _stats_needs(ctx: ScoringContext, group: Group) -> list[Need]:
    return [Need(e.tensor, e.axes) for e in read_ends(ctx.dg, group)]


def activation(ctx: ScoringContext, group: Group) -> np.ndarray:
    """Mean |activation| per channel, on the tensors the next layers read (after the
    activation function: a dead ReLU channel scores zero however large its weights)."""
    members = [_per_channel(group, e, ctx.stats(e.tensor, e.axes).mean_abs) for e in read_ends(ctx.dg, group)]
    return _sum_of_members(members)


def output(ctx: ScoringContext, group: Group) -> np.ndarray:
    """A channel's share of its readers' output energy: E[x_c^2] times the squared norm of
    the weight rows reading channel c, per reader (each reader counting equally).

    Without a reader (nothing contracts the group), E[x_c^2] of the produced tensors.
    """
    members = []
    for c in contractions(ctx.dg, group):
        energy = weight_energy(ctx.dg, group, c)
        moment = ctx.stats(c.data.tensor, c.data.axes).second_moment
        if energy is None:  # indices not paired (grouped readers): energy of the channel's weights, summed
            members.append(_per_channel(group, c.data, moment) * _norm_score(ctx.dg, group, 2, list(c.weights)))
        else:
            members.append(_per_channel(group, c.data, moment * energy))
    if not members:
        members = [_per_channel(group, e, ctx.stats(e.tensor, e.axes).second_moment) for e in read_ends(ctx.dg, group)]
    return _sum_of_members(members)


def _reader_gram_kind(dg: DependencyGraph, end: End) -> Collect:
    return Collect.GRAM if dg.size(end) <= MAX_GRAM else Collect.STATS


def _unfolded_form(dg: DependencyGraph, contraction: Contraction):
    """The reader's matrix view (``OpSpec.linear``) where it sees more than the channel Gram:
    one group, several kernel taps, not too many columns; else None."""
    form = linear_form(dg, contraction.node)
    data = contraction.data
    if form is None or form.groups != 1 or data.port.slot != form.input_slot:
        return None
    rank = len(dg.graph.shape(data.tensor) or ())
    if not rank or data.axes != (int(form.in_axis) % rank,):
        return None
    if not np.any(form.k_offset) or len(form.k_channel) > MAX_GRAM:
        return None
    return form


def _reconstruction_needs(ctx: ScoringContext, group: Group) -> list[Need]:
    readers = contractions(ctx.dg, group)
    if not readers:
        return _stats_needs(ctx, group)
    return [unfolded_need(ctx.dg, c.node) if _unfolded_form(ctx.dg, c) is not None
            else Need(c.data.tensor, c.data.axes, _reader_gram_kind(ctx.dg, c.data)) for c in readers]


def _unfolded_reader(ctx: ScoringContext, group: Group, contraction: Contraction, form) -> Reader:
    """Every kernel tap a column: channel k's block is the columns reading its input channels."""
    gram = ctx.unfolded_gram(contraction.node)
    weights = np.asarray(form.matrix()[0], dtype=np.float64).T  # [columns, outputs]
    blocks = [np.flatnonzero(np.isin(form.k_channel, group.at(contraction.data, k))) for k in range(group.size)]
    return Reader(blocks, weights, np.diag(gram).copy(), gram)


def linear_reader(ctx: ScoringContext, group: Group, contraction: Contraction) -> Reader:
    """A contraction as a linear map of its input indices, with calibration statistics.

    Where the group's indices at the data input and at a weight cannot be paired
    one to one (grouped readers), each index gets the channel's mean weight
    energy and no cross terms (no re-fit is assumed for that reader).
    """
    form = _unfolded_form(ctx.dg, contraction)
    if form is not None:
        return _unfolded_reader(ctx, group, contraction, form)
    dg, data = ctx.dg, contraction.data
    n = dg.size(data)
    blocks = [group.at(data, k) for k in range(group.size)]
    columns, paired = [], True
    for weight in contraction.weights:
        rows = _param_rows(dg, weight)
        w = np.zeros((n, rows.shape[1]))
        pairs = _paired(group, data, weight)
        if pairs is None:
            paired = False
        else:
            w[pairs[0]] = rows[pairs[1]]
        columns.append(w)
    if _reader_gram_kind(dg, data) == Collect.GRAM:
        gram = ctx.gram(data.tensor, data.axes)
        moment = np.diag(gram).copy()
    else:
        gram, moment = None, ctx.stats(data.tensor, data.axes).second_moment
    if not paired:
        energy = _norm_score(dg, group, 2, list(contraction.weights))
        w = np.zeros((n, 1))
        for k, b in enumerate(blocks):
            if len(b):
                w[b, 0] = np.sqrt(energy[k] / len(b))
        return Reader(blocks, w, moment, None)
    return Reader(blocks, np.hstack(columns), moment, gram)


def reconstruction(ctx: ScoringContext, group: Group) -> np.ndarray:
    """ThiNet / He et al.: greedily remove the channels whose removal least changes the
    readers' outputs once their remaining weights are re-fitted (see :mod:`onnxprune.selection`);
    the score is the removal order on the scale of that error. Without a reader, ``output``."""
    readers = [linear_reader(ctx, group, c) for c in contractions(ctx.dg, group)]
    if not readers:
        return output(ctx, group)
    return greedy_scores(readers, group.size)


CRITERIA: dict[str, Criterion] = {
    "l1": Criterion(l1, doc="L1 norm summed over every coupled parameter"),
    "l2": Criterion(l2, doc="L2 norm summed over every coupled parameter"),
    "bn-scale": Criterion(bn_scale, doc="BatchNorm |gamma| (Network Slimming)"),
    "random": Criterion(random, doc="random (seeded)"),
    "activation": Criterion(activation, _stats_needs, doc="mean |activation| on calibration data"),
    "output": Criterion(output, _stats_needs, doc="E[x^2] x squared norm of the weights reading the channel"),
    "reconstruction": Criterion(reconstruction, _reconstruction_needs,
                                doc="greedy least-change-after-refit selection of the readers' outputs (ThiNet)"),
}
