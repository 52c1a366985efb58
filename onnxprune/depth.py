"""How important each residual block is, and which blocks ``--depth N`` removes.

Three scores, lower = less important = removed first:

- ``weights`` (no data): the scale of what the branch adds, read from the weights of
  its exit layers (the nearest layers with weights going back from r). A normalization
  with running statistics (BatchNorm) outputs per channel mean beta and deviation
  |gamma| when its input matches its statistics, so its output scale is
  sqrt(mean_c(gamma_c^2 + beta_c^2)); a linear layer (Conv, Gemm, MatMul + bias) maps
  unit-scale inputs to outputs of scale sqrt(mean_o(||w_o||^2 + b_o^2)). Several exit
  layers (r computed from several) count by the root of their squares' sum. A branch
  whose last BatchNorm learned small gammas adds little: the block-level form of
  Network Slimming's |gamma| criterion. It knows nothing of the skip's scale or of
  what the model does downstream: prefer a data score when samples are at hand.
- ``influence`` (calibration data): 1 - cos(s, y) between the block's input and output
  (y without the block's addend, where the join adds more than two),
  per sample over the whole tensor, averaged (ShortGPT's block influence): a block that
  barely turns its input matters little. One pass over the data for all blocks.
- ``output`` (calibration data, the default with data): the relative L2 change of the
  model's outputs with that block alone removed (worst output). What removal does to
  the model, downstream effects included; one run of the model per block.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable

import numpy as np

from .blocks import Block, BlockKey, Discovery
from .calibration import CalibrationSet
from .ir import Graph
from .passes.layers import linear_layers
from .registry import Registry
from .rules import NodeView


class DepthScore(str, Enum):
    WEIGHTS = "weights"
    INFLUENCE = "influence"
    OUTPUT = "output"

    @property
    def data_driven(self) -> bool:
        return self is not DepthScore.WEIGHTS


DEPTH_SCORES = tuple(s.value for s in DepthScore)


def default_score(has_data: bool) -> DepthScore:
    return DepthScore.OUTPUT if has_data else DepthScore.WEIGHTS


@dataclass(frozen=True)
class ScoredBlock:
    block: Block
    scores: dict  # score name -> value (every score computed)

    def score(self, by: DepthScore) -> float:
        return self.scores[by.value]


# ----------------------------------------------------------------------------- weights
def weight_scores(graph: Graph, registry: Registry, blocks: Iterable[Block]) -> dict[BlockKey, float]:
    layers = {layer.form.output: layer for layer in linear_layers(graph, registry)}
    stats = {}
    for node in graph.nodes:
        spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
        if spec is not None and spec.running_stats is not None:
            stats[node.outputs[0]] = (node, spec.running_stats)
    return {b.key: _exit_scale(graph, b, layers, stats) for b in blocks}


def _exit_scale(graph: Graph, block: Block, layers: dict, stats: dict) -> float:
    branch, seen, found = set(block.nodes), set(), []
    stack = [block.residual]
    while stack:
        tensor = stack.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        scale = _norm_scale(graph, stats[tensor]) if tensor in stats else \
            _linear_scale(layers[tensor]) if tensor in layers else None
        if scale is not None:
            found.append(scale)
            continue
        produced = graph.producers.get(tensor)
        if produced is None or produced[0].name not in branch:
            continue
        stack.extend(t for t in produced[0].inputs if t and t not in graph.constant_derived)
    return float(np.sqrt(sum(s * s for s in found))) if found else 1.0


def _norm_scale(graph: Graph, entry) -> float | None:
    node, stats = entry
    view = NodeView(node, graph)
    gamma = view.const(stats.scale_slot) if stats.scale_slot is not None else None
    beta = view.const(stats.shift_slot) if stats.shift_slot is not None else None
    if gamma is None:
        return None
    beta = np.zeros_like(gamma) if beta is None else beta
    return float(np.sqrt(np.mean(np.square(gamma.astype(np.float64)) + np.square(beta.astype(np.float64)))))


def _linear_scale(layer) -> float:
    matrix = layer.form.matrix().astype(np.float64)  # [G, O, K]
    rows = np.square(matrix).sum(axis=2).reshape(-1)
    bias = layer.form.bias()
    if bias is not None:
        rows = rows + np.square(np.asarray(bias, np.float64).reshape(-1))
    return float(np.sqrt(rows.mean()))


# ----------------------------------------------------------------------------- data
def influence_scores(graph: Graph, blocks: list[Block], data: CalibrationSet, provider: str = "cpu",
                     batch_size: int = 16) -> dict[BlockKey, float]:
    """1 - cos(s, y) per sample, averaged over the samples (for a join of more addends, s: y less
    the block's residual r, what y becomes without it)."""
    from .activations import stream  # late: onnxruntime
    tensors = [t for b in blocks for t in (b.skip if b.addends == 2 else b.residual, b.output)]
    sums = {b.key: 0.0 for b in blocks}
    count = 0
    for values in stream(graph, tensors, data, provider, batch_size):
        n = None
        for b in blocks:
            y = np.asarray(values[b.output], np.float64)
            s = np.asarray(values[b.skip], np.float64) if b.addends == 2 else \
                y - np.asarray(values[b.residual], np.float64)
            s, y = s.reshape(len(s), -1), y.reshape(len(y), -1)
            ns, ny = np.linalg.norm(s, axis=1), np.linalg.norm(y, axis=1)
            cos = np.where(ns * ny > 0, (s * y).sum(axis=1) / np.maximum(ns * ny, 1e-300), 1.0)
            sums[b.key] += float((1.0 - cos).sum())
            n = len(s)
        count += n or 0
    return {k: v / max(count, 1) for k, v in sums.items()}


def output_scores(graph: Graph, blocks: list[Block], removed: Callable[[Block], Graph], data: CalibrationSet,
                  provider: str = "cpu", batch_size: int = 16, progress=None) -> dict[BlockKey, float]:
    """Relative L2 change of the outputs (worst output) with each block alone removed."""
    from .activations import stream
    names = [v.name for v in graph.outputs]
    reference = [{n: v[n] for n in names} for v in stream(graph, [], data, provider, batch_size)]
    ref_sq = {n: sum(float(np.square(np.asarray(r[n], np.float64)).sum()) for r in reference) for n in names}
    scores = {}
    for block in (progress(blocks) if progress else blocks):
        err = {n: 0.0 for n in names}
        for ref, got in zip(reference, stream(removed(block), [], data, provider, batch_size)):
            for n in names:
                err[n] += float(np.square(np.asarray(got[n], np.float64) - np.asarray(ref[n], np.float64)).sum())
        scores[block.key] = max(float(np.sqrt(err[n] / ref_sq[n])) if ref_sq[n] > 0 else float(err[n] > 0)
                                for n in names)
    return scores


# ----------------------------------------------------------------------------- selection
def choose(scored: list[ScoredBlock], n: int, by: DepthScore) -> list[ScoredBlock]:
    """The ``n`` lowest-scored blocks that do not overlap (a nested block goes with its outer one,
    so the two are never both chosen); ties by block id. Fewer where fewer fit."""
    chosen: list[ScoredBlock] = []
    for item in sorted(scored, key=lambda s: (s.score(by), s.block.id)):
        if len(chosen) == n:
            break
        if not any(item.block.overlaps(c.block) for c in chosen):
            chosen.append(item)
    return sorted(chosen, key=lambda s: s.block.id)


def record(item: ScoredBlock, by: DepthScore, params_total: int, macs_total: int) -> dict:
    """What the report and a saved plan keep of a removed block (JSON-able)."""
    data = item.block.to_dict(params_total, macs_total)
    data.update(score_by=by.value, scores=dict(item.scores))
    return data


def scored(discovery: Discovery, scores: dict[str, dict[BlockKey, float]]) -> list[ScoredBlock]:
    return [ScoredBlock(b, {name: table[b.key] for name, table in scores.items()}) for b in discovery.blocks]


__all__ = ["DepthScore", "DEPTH_SCORES", "default_score", "ScoredBlock", "weight_scores", "influence_scores",
           "output_scores", "choose", "record", "scored"]
