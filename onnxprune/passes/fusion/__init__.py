"""Fusion and re-parameterization: exact rewrites that need no data.

Pass-through nodes go; affine nodes (BatchNorm in inference, Mul/Add/Sub/Div by a
per-channel constant) fold into the linear layer before or after them; parallel
branches on one input that are summed merge into one layer (RepVGG); two linear layers
in a row merge into one. Each is a :class:`onnxprune.passes.Rewrite` (pattern, check
with a reason, rewrite); :class:`Fuse` runs them in turn until none applies, and its map
says what merged into what, so recovery and reports follow fused layers, never names.
"""
from __future__ import annotations

from typing import Mapping

from ...edits import EditMap
from ...ir import Graph
from ...options import FuseOptions
from ...registry import Registry
from .. import PassResult, RewritePass
from .affine import FoldAffineAfter, FoldAffineBefore
from .linear import MergeConsecutive
from .parallel import MergeParallel
from .passthrough import DropPassthrough

REWRITES = {"passthrough": (DropPassthrough,), "affine": (FoldAffineAfter, FoldAffineBefore),
            "parallel": (MergeParallel,), "linear": (MergeConsecutive,)}


class Fuse:
    """Every fusion the options ask for, round after round until none applies (a
    :class:`onnxprune.passes.GraphPass`). ``tied``: copy -> original names of constants
    that one tensor backs (see :mod:`onnxprune.sharing`); fusion refuses to rewrite a
    weight that nodes outside the match also read. Its refusals are those of the last
    round, on the graph it returns."""

    name = "fuse"

    def __init__(self, registry: Registry, tied: Mapping[str, str] | None = None,
                 options: FuseOptions | None = None, max_rounds: int = 16):
        self.options = (options or FuseOptions()).check()
        self.rewrites = [cls(registry, tied) for kind in self.options.ordered for cls in REWRITES[kind]]
        self.max_rounds = max_rounds

    def run(self, graph: Graph) -> PassResult:
        history, counts, refused = EditMap.identity(graph), {r.name: 0 for r in self.rewrites}, ()
        for _ in range(self.max_rounds):
            changed, refused = 0, ()
            for rewrite in self.rewrites:
                result = RewritePass(rewrite).run(graph)
                history, graph = history.then(result.edits), result.graph
                counts[rewrite.name] += result.changed
                changed += result.changed
                refused += result.refused
            if not changed:
                break
        notes = tuple(f"{name}: {n}" for name, n in counts.items() if n)
        return PassResult(self.name, graph, sum(counts.values()), notes, edits=history, refused=refused)


def fusion_report(result: PassResult) -> dict:
    """What the report shows of a fusion: what merged into what, what was dropped, what was refused."""
    edits = result.edits
    return {"fused": result.changed,
            "by_rewrite": {name: int(n) for name, n in (note.rsplit(": ", 1) for note in result.notes)},
            "merged": {new: list(olds) for new, olds in edits.merged_nodes.items()},
            "dropped": list(edits.deleted_nodes),
            "refused": list(result.refused)}


__all__ = ["Fuse", "fusion_report", "REWRITES", "DropPassthrough", "FoldAffineAfter", "FoldAffineBefore",
           "MergeParallel", "MergeConsecutive"]
