"""What bought the speed: the latency each edit step bought, next to its MACs and fidelity.

The edits of a run are the steps of its recipe (removed blocks, channels, fusion), each
deterministic on the graph of its time. The input model is rebuilt step by step (the
recipe replayed on the original) and the model after each step is timed, all of them side
by side with the original in **one** interleaved measurement (onnxprune.latency), bounded
by the same ``--latency-time`` as the summary's figure: a step's change is the difference of
two ratios measured under the same load.

Why per step and not per edit (each block alone, each group alone): a model per block is
16 models for ResNet-50's removable blocks, each a few percent of the latency, timed in
one bounded run: their differences would drown in the spread, and the run would cost 8x
more. Within a step its items are listed with what was measured of them exactly (MACs,
channels, fused nodes), never with a latency share that was not measured. Steps interact
(thinned layers make the blocks removed before cheaper): the changes are read in order.

Fidelity is the worst-output cosine of the model after each step against the original on
the summary's samples; steps before the last are the replayed, unrecovered edits, the last
is the written model (recovered, where --recover ran).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .blocks import find_blocks
from .depgraph import DependencyGraph
from .ir import Graph
from .latency import RatioSpread
from .metrics import node_macs
from .passes import PassResult
from .recipe import BLOCKS, CHANNELS, FUSE, REPLAYERS, Step
from .registry import Registry
from .widthgrid import layer_of


@dataclass
class Stage:
    """One recipe step replayed: the graph before it (and its analysis), the graph after, the passes it ran."""

    step: Step
    before: Graph
    analysis: DependencyGraph
    after: Graph
    passes: list[PassResult] = field(default_factory=list)


def replay_stages(fresh, steps: Sequence[Step]) -> list[Stage]:
    """``fresh``: a Pruner on the original model (api.Pruner.fresh); each step is replayed on it in turn."""
    stages = []
    for step in steps:
        before, analysis, done = fresh.graph, fresh.depgraph, len(fresh.passes)
        REPLAYERS[step.kind](fresh, step.payload)
        stages.append(Stage(step, before, analysis, fresh.graph, fresh.passes[done:]))
    return stages


def items(stage: Stage, registry: Registry) -> list[dict]:
    """What the step did, item by item, with what was counted exactly (JSON-able)."""
    kind = stage.step.kind
    before, after = node_macs(stage.before, registry), node_macs(stage.after, registry)
    total = sum(before.values()) or 1
    if kind == BLOCKS:
        blocks = find_blocks(stage.before, registry).by_key()
        found = [blocks.get((b["join"], b["residual"])) for b in stage.step.payload["blocks"]]
        return [{"join": b.join, "skip": b.skip, "residual": b.residual, "macs_share": b.macs / total}
                for b in found if b is not None]
    if kind == CHANNELS:
        rows: dict[str, dict] = {}
        for node, macs in before.items():
            if after.get(node, macs) == macs:
                continue
            layer = layer_of(stage.analysis, node)
            row = rows.setdefault(str(layer.kind) if layer else "other", {"layers": 0, "macs_before": 0, "macs_after": 0})
            row["layers"] += 1
            row["macs_before"] += macs
            row["macs_after"] += after.get(node, 0)
        plan = stage.step.payload
        return [{"layer_kind": k, **v} for k, v in sorted(rows.items(), key=lambda kv: -kv[1]["macs_before"])] + \
            [{"channels": plan.removed_channels, "groups": len(plan.decisions)}]
    if kind == FUSE:
        counts: dict[str, int] = {}
        for result in stage.passes:
            for note in result.notes:
                name, _, n = note.rpartition(": ")
                if n.isdigit():
                    counts[name] = counts.get(name, 0) + int(n)
        return [{"rewrite": name, "fused": n} for name, n in counts.items()]
    return []


def label(stage: Stage) -> str:
    kind, payload = stage.step.kind, stage.step.payload
    if kind == BLOCKS:
        n = len(payload["blocks"])
        return f"{n} block{'s' if n != 1 else ''}"
    if kind == CHANNELS:
        return f"{payload.removed_channels} channels"
    if kind == FUSE:
        return "fuse"
    return kind


def attribute(stages: Sequence[Stage], final: Graph, registry: Registry,
              time_all: Callable[[list[Graph]], Sequence[RatioSpread]] | None,
              cosine: Callable[[Graph], float] | None) -> list[dict]:
    """One row per step: the cumulative latency ratio after it and its change, MACs and cosine likewise.

    ``final`` stands for the last step's graph (the written model: same structure, its
    weights recovered where recovery ran). ``time_all``: each graph's latency over the
    original's, timed side by side (None: not timed); ``cosine``: a graph's fidelity (None: none)."""
    graphs = [s.after for s in stages[:-1]] + [final] if stages else []
    macs0 = sum(node_macs(stages[0].before, registry).values()) if stages else 0
    ratios = list(time_all(graphs)) if time_all is not None and graphs else [None] * len(graphs)
    rows, last_latency, last_macs, last_cosine = [], 1.0, 1.0, 1.0
    for stage, graph, ratio in zip(stages, graphs, ratios):
        macs = sum(node_macs(graph, registry).values()) / macs0 if macs0 else None
        cos = cosine(graph) if cosine is not None else None
        row = {"step": stage.step.kind, "what": label(stage), "items": items(stage, registry),
               "latency_ratio": ratio.to_dict() if ratio is not None else None,
               "latency_change": ratio.median - last_latency if ratio is not None else None,
               "macs": macs, "macs_change": macs - last_macs if macs is not None else None,
               "cosine": cos, "cosine_change": cos - last_cosine if cos is not None else None}
        rows.append(row)
        last_latency = ratio.median if ratio is not None else last_latency
        last_macs = macs if macs is not None else last_macs
        last_cosine = cos if cos is not None else last_cosine
    return rows


def summary_lines(rows: list[dict], verbose: bool = False) -> list[str]:
    """One compact line (each step's cumulative latency and change); with ``verbose`` the items too."""
    if not rows or (len(rows) == 1 and not verbose):  # one step: the latency line says it all
        return []
    parts = []
    for row in rows:
        lat = row["latency_ratio"]
        parts.append(f"{row['what']} x{lat['ratio']:.3f} ({row['latency_change']:+.3f})" if lat else row["what"])
    lines = ["speed by  " + ", ".join(parts) + "  (latency after each step, one side-by-side run; -v: details)"]
    if not verbose:
        return lines
    for row in rows:
        cos = f", cosine {row['cosine']:.4f}" if row["cosine"] is not None else ""
        lat = row["latency_ratio"]
        spread = f" (95% CI x{lat['ratio_ci95'][0]:.3f}-{lat['ratio_ci95'][1]:.3f})" if lat else ""
        lines.append(f"  {row['what']}: latency x{lat['ratio']:.3f}{spread}" if lat else f"  {row['what']}:")
        lines[-1] += f", MACs x{row['macs']:.3f} ({row['macs_change']:+.3f}){cos}"
        for item in row["items"]:
            if "join" in item:
                share = f"{100 * item['macs_share']:.1f}%" if item["macs_share"] is not None else "-"
                lines.append(f"    block at {item['join']}: MACs {share}")
            elif "layer_kind" in item:
                lines.append(f"    {item['layer_kind']}: {item['layers']} layers, MACs "
                             f"{item['macs_before']:,} -> {item['macs_after']:,}")
            elif "rewrite" in item:
                lines.append(f"    {item['rewrite']}: {item['fused']}")
    return lines


__all__ = ["Stage", "replay_stages", "items", "attribute", "summary_lines"]
