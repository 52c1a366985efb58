"""Graph-level passes: rewrites that whole-graph knowledge needs, beside the per-node rules.

A per-node rule (``opspecs/``) says how one operator's ports couple; a pass
rewrites the graph as a whole: folding shape arithmetic into constants,
re-fitting weights from calibration data (recovery), deleting dead nodes,
merging layers (BatchNorm into Conv, a block into its skip path). Every pass
has the same shape, so a pipeline is a list of passes:

    graph, results = run_passes(graph, [FoldShapeArithmetic(registry), ...])

A pass must not mutate its input graph (return a new one) and must keep the
model's function: the oracle for each pass is the original's outputs,
compared numerically with onnxruntime in its tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from ..ir import Graph


@dataclass(frozen=True)
class PassResult:
    """What one pass did: the new graph, how many things it changed, and notes for the report."""

    name: str
    graph: Graph
    changed: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    # tensors the pass fitted to the original model's values (recovery): later passes leave them be
    fitted: frozenset[str] = frozenset()


class GraphPass(Protocol):
    """A whole-graph rewrite; ``name`` shows in progress output and reports."""

    name: str

    def run(self, graph: Graph) -> PassResult: ...


def run_passes(graph: Graph, passes: Sequence[GraphPass],
               progress: Callable[[str], None] | None = None) -> tuple[Graph, list[PassResult]]:
    """Run passes in order, each on the previous one's output."""
    results = []
    for graph_pass in passes:
        result = graph_pass.run(graph)
        results.append(result)
        graph = result.graph
        if progress and result.changed:
            progress(f"{result.name}: {result.changed} changed")
    return graph, results


__all__ = ["GraphPass", "PassResult", "run_passes"]
