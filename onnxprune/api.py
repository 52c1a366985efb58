"""The Python API: load a model, look at its groups, prune, validate, save."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from . import onnx_in, onnx_out
from .calibration import CalibrationSet, has_batch_axis
from .depgraph import DependencyGraph, Group
from .fidelity import Fidelity, measure
from .files import PathPlan
from .importance import CRITERIA
from .ir import Graph
from .metrics import count_macs, count_params
from .options import PruneOptions, RecoveryOptions
from .passes import run_passes
from .passes.fold_shapes import FoldShapeArithmetic
from .passes.fold_weights import FoldConstantWeights
from .passes.layers import Kept, compose
from .plan import GroupDecision, Plan, make_plan
from .recovery import RecoveryResult, recover
from .registry import Registry, builtin_registry
from .rewrite import apply_plan, kept_per_axis, removed_per_dim
from .rules import OUT, Analysis, Port
from . import sensitivity
from .schedule import Lineage, round_options
from .sensitivity import DEFAULT_RATIOS, Sensitivity
from .targets import TOLERANCE, Fraction, SearchResult, search
from .sharing import reshare_params, unshare_params
from .validate import (Reference, ValidationResult, check, latency_side_by_side, make_inputs, run_reference,
                       session, validate)

StepHook = Callable[["Pruner", int], None]


class Pruner:
    """Holds a model and its dependency graph; each prune returns to a consistent state.

    >>> p = Pruner.load("model.onnx")
    >>> group = p.group_of("Conv_0")              # the channels coupled to Conv_0's outputs
    >>> p.prune_group(group, [0, 3])              # remove two of them, everywhere
    >>> p.prune(ratio=0.5)                        # or: every prunable group, by importance
    >>> p.save("pruned.onnx")
    """

    def __init__(self, graph: Graph, registry: Registry | None = None, source: onnx.ModelProto | None = None,
                 input_shapes: dict[str, list[int]] | None = None, analysis: Analysis | None = None):
        self.registry = registry or builtin_registry()
        self.analysis = analysis or Analysis()
        self.input_shapes = input_shapes or {}
        self.original = source
        self.source_path: Path | None = None  # where the original runs from when its proto lacks weights
        graph, self._copies = unshare_params(graph)
        self._set(graph)
        self.original_graph = graph
        self.plans: list[Plan] = []  # every plan applied, each on the graph of its time
        self.searches: list[SearchResult] = []  # target searches, one per round that had a target
        self.notes: list[str] = []  # what loading changed in the model (folded weights), for the report
        self.kept: Kept = {}  # tensor -> axis -> original indices still present (for recovery)
        self.recoveries: list[RecoveryResult] = []

    @classmethod
    def load(cls, path: str | os.PathLike, input_shapes: dict[str, list[int]] | None = None,
             registry: Registry | None = None, analysis: Analysis | None = None) -> "Pruner":
        model_file = onnx_in.open_model(path)
        upgraded = onnx_in.check_supported(model_file.load(map_weights=True), str(path))
        pruner = cls.from_file(model_file, input_shapes, registry, analysis)
        pruner.notes = upgraded + pruner.notes
        return pruner

    @classmethod
    def from_file(cls, model_file: onnx_in.ModelFile, input_shapes: dict[str, list[int]] | None = None,
                  registry: Registry | None = None, analysis: Analysis | None = None) -> "Pruner":
        """From a loaded (and checked) :class:`onnx_in.ModelFile`: its mapped weights stay mapped, and
        the original runs in onnxruntime from the file itself."""
        pruner = cls.from_model(model_file.proto, input_shapes, registry, checked=True, mapped=model_file.mapped,
                                analysis=analysis)
        if model_file.mapped:  # the proto lacks those weights' data: onnxruntime reads them from the files
            pruner.source_path = model_file.path
        return pruner

    @classmethod
    def from_model(cls, model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None,
                   registry: Registry | None = None, checked: bool = False,
                   mapped: dict[str, np.ndarray] | None = None, analysis: Analysis | None = None) -> "Pruner":
        if not checked:
            onnx_in.check_supported(model)
        registry = registry or builtin_registry()
        graph = onnx_in.to_graph(model, input_shapes, mapped)
        passes = [FoldConstantWeights(registry)] + registry.passes() + (
            [FoldShapeArithmetic(registry)] if onnx_in.declared_static(model) else [])
        folded, results = run_passes(graph, passes)
        if any(r.changed for r in results):
            graph = onnx_in.reinfer(folded, input_shapes)
        pruner = cls(graph, registry, model, input_shapes, analysis)
        pruner.notes = [note for r in results for note in r.notes]
        return pruner

    def _set(self, graph: Graph) -> None:
        self.graph = graph
        self.depgraph = DependencyGraph(graph, self.registry, analysis=self.analysis)

    def _analyse_for(self, options: PruneOptions) -> None:
        """Re-read the current graph if the options prune attention in the other unit (head_dim or heads)."""
        if options.prune_head_dim != self.analysis.head_dim:
            self.analysis = dataclasses.replace(self.analysis, head_dim=options.prune_head_dim)
            self._set(self.graph)

    # --- looking
    @property
    def groups(self) -> list[Group]:
        return self.depgraph.groups

    def prunable_groups(self) -> list[Group]:
        return self.depgraph.prunable_groups()

    def group_of(self, node: str, channel: int | None = None, port: Port = OUT(0)) -> Group:
        return self.depgraph.group_of(node, channel, port)

    def params(self) -> int:
        return count_params(reshare_params(self.graph, self._copies))

    def macs(self) -> int:
        return count_macs(self.graph, self.registry)

    # --- pruning
    def plan(self, options: PruneOptions | None = None, *, data: CalibrationSet | None = None,
             provider: str = "cpu", history: dict[int, tuple[int, int]] | None = None, **kwargs) -> Plan:
        """One round's plan on the current graph; ``data``: calibration samples for data-driven criteria.

        With a size target the budget level is searched (see targets.py); ``history`` is what earlier
        rounds of ``--steps`` removed."""
        options = (options or PruneOptions()).with_(**kwargs).check()
        self._analyse_for(options)
        if options.target is None:
            return make_plan(self.depgraph, options, data=data, provider=provider, history=history)
        metric, target = options.target
        result = search(self.depgraph, options, metric, target, self._fraction(metric, options, provider),
                        history, data, provider,
                        **({"max_evaluations": 12, "close_enough": TOLERANCE / 2} if metric == "latency" else {}))
        self.searches.append(result)
        return result.plan

    def apply(self, plan: Plan) -> None:
        """Apply a plan made on the current graph; group ids refer to the current groups."""
        kept_now = kept_per_axis(self.graph, removed_per_dim(self.depgraph, plan))
        self._set(self._reinfer(apply_plan(self.depgraph, plan)))
        self.kept = compose(self.kept, kept_now)
        self.plans.append(plan)

    def prune(self, options: PruneOptions | None = None, *, data: CalibrationSet | None = None,
              provider: str = "cpu", after_step: StepHook | None = None, **kwargs) -> Plan | None:
        """Prune by the options, in ``options.steps`` rounds; return the plan of all rounds on the original graph.

        Each round re-scores the model the previous one left. ``after_step(pruner, step)`` runs after every
        round (1-based): the place for recovery, so the next round scores the recovered weights. The
        returned plan re-applied to the original model gives the same structure (None in the rare case
        that a group could not be followed across rounds; ``self.plans`` then holds each round's plan).
        """
        options = (options or PruneOptions()).with_(**kwargs).check()
        self._analyse_for(options)
        lineage, rounds = Lineage(self.depgraph), []
        for step in range(1, options.steps + 1):
            plan = self.plan(round_options(options, step, options.steps), data=data, provider=provider,
                             history=lineage.history(self.depgraph))
            lineage.record(self.depgraph, plan)
            self.apply(plan)
            rounds.append(plan)
            if after_step is not None:
                after_step(self, step)
        if len(rounds) == 1:
            return rounds[0]
        return lineage.plan(rounds[-1].criterion, rounds[-1].ratio, rounds[0].skipped)

    def prune_group(self, group: Group, channels) -> None:
        """Remove the given channels (indices into ``group.channels``) of one group."""
        plan = Plan((GroupDecision(group.id, str(group.root), group.size, tuple(sorted(int(c) for c in channels))),))
        self.apply(plan)

    def _fraction(self, metric: str, options: PruneOptions, provider: str = "cpu") -> Fraction:
        """A pruned graph's MACs, params or latency as a fraction of the original model's."""
        if metric == "macs":
            base = count_macs(self.original_graph, self.registry)
            return lambda graph: count_macs(graph, self.registry) / base
        if metric == "params":
            base = count_params(reshare_params(self.original_graph, self._copies))
            return lambda graph: count_params(reshare_params(graph, self._copies)) / base
        reference = session(self._original_model(), provider)
        feeds = make_inputs(self.original_graph, seed=options.seed)

        def latency(graph: Graph) -> float:
            candidate = session(reshare_params(graph, self._copies), provider)
            before, after = latency_side_by_side([reference, candidate], feeds, options.latency_runs)
            return after / before
        return latency

    def _original_model(self) -> onnx.ModelProto | Path:
        if self.source_path is not None:
            return self.source_path
        return self.original if self.original is not None else \
            onnx_out.to_model(reshare_params(self.original_graph, self._copies))

    def recover(self, data: CalibrationSet | None = None, options: RecoveryOptions | None = None,
                progress: bool = False, **kwargs) -> RecoveryResult:
        """Re-fit the pruned model to the original on calibration data (after :meth:`prune`):
        bias compensation, least-squares reconstruction, BatchNorm re-estimation, front to
        back (``kwargs``: RecoveryOptions fields). Fidelity is measured on a held-out part of
        ``data`` (default: random inputs) before and after."""
        options = dataclasses.replace(options or RecoveryOptions(), **kwargs).check()
        data = data if data is not None else self.random_inputs(64, options.seed)
        graph, result = recover(self.original_graph, self.graph, self.kept, data, self.registry, options, progress)
        if result.kept and graph is not self.graph:
            self._set(graph)
        self.recoveries.append(result)
        return result

    def _reinfer(self, graph: Graph) -> Graph:
        """Shapes of the pruned graph from inference again, not from bookkeeping."""
        return onnx_in.reinfer(graph, self.input_shapes)

    # --- output
    def to_model(self) -> onnx.ModelProto:
        return onnx_out.to_model(reshare_params(self.graph, self._copies))

    def feeds(self, inputs: str | None = None, seed: int = 0) -> dict:
        """Validation inputs: the arrays of an .npz file, or random ones (seeded) of the analysed shapes."""
        return make_inputs(self.original_graph, inputs, seed)

    def run_original(self, feeds: dict, provider: str = "cpu") -> Reference:
        """Run the unpruned model (before pruning, so its own failures are reported as such)."""
        return run_reference(self._original_model(), feeds, provider)

    def validate(self, inputs: str | None = None, provider: str = "cpu", runs: int = 20,
                 feeds: dict | None = None, reference: Reference | None = None) -> ValidationResult:
        feeds = self.feeds(inputs) if feeds is None else feeds
        return validate(self._original_model(), self.to_model(), feeds, provider, runs, reference)

    # --- data
    def load_calibration(self, path: str | os.PathLike) -> CalibrationSet:
        """Calibration samples for this model's inputs (see :mod:`onnxprune.calibration`)."""
        return CalibrationSet.load(path, self.original_graph.inputs)

    def random_inputs(self, n_samples: int = 8, seed: int = 0) -> CalibrationSet:
        """Random samples shaped like the analysed inputs (batch axis excluded); for a model without
        a batch axis (see :func:`has_batch_axis`), one feed of the analysed shapes."""
        if not has_batch_axis(self.original_graph.inputs):
            return CalibrationSet(self.feeds(seed=seed), "random feed (no batch axis)", whole=True)
        shapes = {v.name: tuple(self.original_graph.values.get(v.name, v).shape or ())[1:]
                  for v in self.original_graph.inputs}
        return CalibrationSet.random(self.original_graph.inputs, n_samples, shapes, seed)

    def fidelity(self, data: CalibrationSet | None = None, provider: str = "cpu") -> Fidelity:
        """Output agreement of the current (pruned) model with the original on ``data``
        (default: a few random samples)."""
        data = data if data is not None else self.random_inputs()
        return measure(self.original_graph, reshare_params(self.graph, self._copies), data, provider)

    def sensitivity(self, data: CalibrationSet | None = None, *, ratios=DEFAULT_RATIOS,
                    options: PruneOptions | None = None, blocks: int = 0, provider: str = "cpu",
                    progress=None) -> Sensitivity:
        """Prune each group (or block of groups) of the current model alone at each ratio and measure
        the outputs' error against the original (see :mod:`onnxprune.sensitivity`)."""
        data = data if data is not None else self.random_inputs()
        return sensitivity.analyze(self.depgraph, self.original_graph, data, ratios=ratios, options=options,
                                   blocks=blocks, provider=provider, progress=progress,
                                   to_model_graph=lambda g: reshare_params(g, self._copies))

    def save(self, path: str | os.PathLike, check_model: bool = True) -> None:
        model = self.to_model()
        if check_model:
            check(model)
        onnx_out.save(model, path)


def ensure_distinct(src: str | os.PathLike, dst: str | os.PathLike, what: str = "output") -> None:
    """Refuse to overwrite the input model (also through links or other spellings)."""
    PathPlan().read("input", src).write(what, dst).check(reads_exist=False)


def ensure_writable(dst: str | os.PathLike, what: str = "output") -> None:
    """Fail before any work when ``dst`` cannot be created, so a late write cannot leave half the results."""
    PathPlan().write(what, dst).check()


Progress = Callable[[str], None]


def timed(progress: Progress | None, label: str):
    class _Timer:
        def __enter__(self):
            self.start = time.perf_counter()
            return self

        def __exit__(self, *exc):
            self.seconds = time.perf_counter() - self.start
            if progress and exc[0] is None:
                progress(f"{label}: {self.seconds:.2f}s")
    return _Timer()


__all__ = ["Pruner", "PruneOptions", "RecoveryOptions", "ensure_distinct", "ensure_writable", "CRITERIA"]
