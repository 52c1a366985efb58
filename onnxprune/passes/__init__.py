"""Graph-level passes: rewrites that whole-graph knowledge needs, beside the per-node rules.

A per-node rule (``opspecs/``) says how one operator's ports couple; a pass
rewrites the graph as a whole: folding shape arithmetic into constants,
removing channels by a plan, re-fitting weights from calibration data
(recovery), merging layers (a normalization into a convolution), replacing a
block by its skip path. Every pass has the same shape, so a pipeline is a list
of passes:

    graph, results = run_passes(graph, [FoldShapeArithmetic(registry), ...])
    history = compose(graph_before, results)    # old -> new map of the whole pipeline

A pass must not mutate its input graph (it returns a new one) and returns an
:class:`onnxprune.edits.EditMap` from the graph it got to the graph it made:
what replaced, merged or deleted what. Passes that delete, merge and rewire
nodes are written as a :class:`Rewrite` (a pattern, a check that may refuse with
a reason, a rewrite) and run by :class:`RewritePass`. The oracle for each pass is
numerical: the original's outputs, through onnxruntime, in its tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

from ..edits import EditMap, GraphEditor
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
    # old -> new; None only for passes that keep every node and tensor name (see same_names)
    edits: EditMap | None = None
    # matches the pass's check refused, each with its reason
    refused: tuple[str, ...] = field(default_factory=tuple)

    def edit_map(self, before: Graph) -> EditMap:
        return self.edits if self.edits is not None else same_names(before, self.graph)


class GraphPass(Protocol):
    """A whole-graph rewrite; ``name`` shows in progress output and reports."""

    name: str

    def run(self, graph: Graph) -> PassResult: ...


def same_names(before: Graph, after: Graph) -> EditMap:
    """The map of a pass that renames nothing (it changes values only: folding, recovery)."""
    full = EditMap.identity(after)
    tensors = {t: (t if t in full.tensors else None) for t in EditMap.identity(before).tensors}
    nodes = {n.name: (n.name if n.name in full.nodes else None) for n in before.nodes}
    return EditMap(tensors, nodes)


def run_passes(graph: Graph, passes: Sequence[GraphPass],
               progress: Callable[[str], None] | None = None) -> tuple[Graph, list[PassResult]]:
    """Run passes in order, each on the previous one's output."""
    results = []
    for graph_pass in passes:
        result = graph_pass.run(graph)
        if result.edits is None:
            result = _with_edits(result, same_names(graph, result.graph))
        results.append(result)
        graph = result.graph
        if progress and result.changed:
            progress(f"{result.name}: {result.changed} changed")
    return graph, results


def compose(before: Graph, results: Sequence[PassResult]) -> EditMap:
    """One map from ``before`` to the last result's graph."""
    history, graph = EditMap.identity(before), before
    for result in results:
        history = history.then(result.edit_map(graph))
        graph = result.graph
    return history


def _with_edits(result: PassResult, edits: EditMap) -> PassResult:
    return PassResult(result.name, result.graph, result.changed, result.notes, result.fitted, edits, result.refused)


@dataclass(frozen=True)
class Match:
    """One place a rewrite could apply: the nodes it would consume (no two rewrites applied in
    one pass share a node), and whatever the rewrite needs to remember about it."""

    nodes: tuple[str, ...]
    data: Any = None

    def __str__(self) -> str:
        return " + ".join(self.nodes)


class Rewrite(Protocol):
    """A pattern, a check and a rewrite (the onnxscript rewriter's shape).

    ``find`` yields candidate matches; ``check`` returns a reason to refuse one (None: go
    ahead); ``rewrite`` records the change through the editor (never mutating ``graph``)
    and maps what it deleted or merged onto what replaces it."""

    name: str

    def find(self, graph: Graph) -> Iterable[Match]: ...

    def check(self, graph: Graph, match: Match) -> str | None: ...

    def rewrite(self, graph: Graph, match: Match, editor: GraphEditor) -> None: ...


class RewritePass:
    """Apply a rewrite at every match its check accepts (a :class:`GraphPass`).

    Matches that overlap an earlier accepted one wait for the next round; with
    ``until_fixed`` rounds repeat (on the new graph) until nothing applies, so chains
    (Conv, BatchNorm, Mul) fold one link per round. ``select`` limits which matches apply
    (e.g. the blocks a plan chose)."""

    def __init__(self, rewrite: Rewrite, until_fixed: bool = True, select: Callable[[Match], bool] | None = None,
                 max_rounds: int = 64):
        self.rewrite, self.until_fixed, self.select, self.max_rounds = rewrite, until_fixed, select, max_rounds
        self.name = rewrite.name

    def run(self, graph: Graph) -> PassResult:
        history, total, refused = EditMap.identity(graph), 0, {}
        for _ in range(self.max_rounds):
            editor, used, applied = GraphEditor(graph), set(), 0
            for match in self.rewrite.find(graph):
                if self.select is not None and not self.select(match):
                    continue
                if used.intersection(match.nodes):
                    continue
                reason = self.rewrite.check(graph, match)
                if reason is not None:
                    refused[str(match)] = reason
                    continue
                self.rewrite.rewrite(graph, match, editor)
                used.update(match.nodes)
                applied += 1
            if not applied:
                break
            graph, edits = editor.finish()
            history, total = history.then(edits), total + applied
            if not self.until_fixed:
                break
        notes = tuple(f"{where}: {why}" for where, why in refused.items())
        return PassResult(self.name, graph, total, notes, edits=history, refused=notes)


__all__ = ["GraphPass", "PassResult", "run_passes", "compose", "same_names", "Match", "Rewrite", "RewritePass"]
