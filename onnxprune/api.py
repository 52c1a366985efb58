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
from .blocks import BlockKey, Discovery, find_blocks
from .calibration import CalibrationSet, has_batch_axis
from .depth import DepthScore, ScoredBlock, choose, default_score, influence_scores, output_scores, record, scored, \
    weight_scores
from .errors import ShapeError
from .depgraph import DependencyGraph, Group
from .fidelity import Fidelity, measure
from .files import Outputs, PathPlan, atomic_outputs
from .importance import CRITERIA
from .ir import Graph
from .metrics import count_macs, count_params
from .options import FuseOptions, LatencyOptions, PruneOptions, RecoveryOptions, SaveOptions
from .edits import EditMap, Kept
from .passes import GraphPass, PassResult, run_passes
from .passes.fold_shapes import FoldShapeArithmetic
from .passes.fold_weights import FoldConstantWeights
from .passes.remove_blocks import check_removed, remove_blocks
from .plan import GroupDecision, Plan, make_plan
from .recipe import BLOCKS, CHANNELS, FUSE, Recipe
from .recovery import RecoveryResult, recover
from .registry import Registry, builtin_registry
from .rewrite import ChannelRemoval, apply_plan
from .errors import PlanError
from .rules import OUT, Analysis, Port
from . import sensitivity
from .schedule import Lineage, round_options
from .sensitivity import DEFAULT_RATIOS, Sensitivity
from .targets import TOLERANCE, Fraction, SearchResult, search
from .sharing import reshare_params, unshare_params
from . import latency as timing
from .speed import LatencyRatio, compare_latency, never_slower
from .validate import Reference, ValidationResult, check, make_inputs, run_reference, session, validate
from . import widthgrid
from .widthgrid import WidthGrid

StepHook = Callable[["Pruner", int], None]
PlanLatency = Callable[[Plan], LatencyRatio]  # a plan on the current graph -> its latency over the original's
SPEED_CHECK_ENV = "ONNXPRUNE_SPEED_CHECK"  # "0": PruneOptions.never_slower defaults to off (the test suite)
COARSER = (2, 4)  # width grids the speed check tries, as multiples of the grid's steps


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
        self.external_input = False  # the input kept its weights in external data (so does the output)
        graph, self._copies = unshare_params(graph)
        self._set(graph)
        self.original_graph = graph
        self.plans: list[Plan] = []  # every plan applied, each on the graph of its time
        self.searches: list[SearchResult] = []  # target searches, one per round that had a target
        # original graph -> current graph: every pass since loading (channel removal, fusion,
        # removed blocks), composed; recovery and reports follow it, never names
        self.edits: EditMap = EditMap.identity(graph)
        self.passes: list[PassResult] = []  # every pass run on the model, in order
        self.recipe = Recipe()  # the edits as steps that re-apply to the input model (--save-plan)
        self.notes: list[str] = []  # what loading changed in the model (folded weights), for the report
        self.recoveries: list[RecoveryResult] = []
        self.removed_blocks: list[dict] = []  # every block removed (depth pruning), as depth.record
        self._grids: dict[tuple, WidthGrid] = {}

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
        pruner.external_input = bool(model_file.external)
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
            graph = onnx_in.refresh(folded, input_shapes)
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
             provider: str = "cpu", history: dict[int, tuple[int, int]] | None = None,
             plan_latency: PlanLatency | None = None, **kwargs) -> Plan:
        """One round's plan on the current graph; ``data``: calibration samples for data-driven criteria.

        With a size target the budget level is searched (see targets.py) and, with
        ``options.never_slower``, the plan is timed against the original (``latency``:
        how; default onnxruntime on ``provider``, see speed.py); ``history`` is what
        earlier rounds of ``--steps`` removed."""
        options = (options or PruneOptions()).with_(**kwargs).check()
        self._analyse_for(options)
        grid = self.width_grid(provider, options.width_grid) if options.round_to is None else None
        if options.target is None:
            return make_plan(self.depgraph, options, data=data, provider=provider, history=history, grid=grid)
        metric, target = options.target
        fraction = self._fraction(metric, options, provider)
        limits = {"max_evaluations": 12, "close_enough": TOLERANCE / 2} if metric == "latency" else {}

        def run(opts: PruneOptions, widths: WidthGrid | None) -> SearchResult:
            return search(self.depgraph, opts, metric, target, fraction, history, data, provider, grid=widths,
                          **limits)
        result, grid = _on_the_finest_grid_needed(run, options, grid)
        if metric != "latency" and _speed_check(options):
            latency = plan_latency or self._plan_latency(options, provider)
            if latency is not None:
                coarser = [lambda f=f: run(*_coarser(options, grid, f)) for f in COARSER]
                result = never_slower(result, coarser, latency)
        self.searches.append(result)
        return result.plan

    @property
    def kept(self) -> Kept:
        """Tensor (current graph) -> axis -> indices of the original's channels still present."""
        return self.edits.kept

    def width_grid(self, provider: str = "cpu", mode: str | None = None) -> WidthGrid:
        """The channel counts ``provider`` runs fast, per layer kind (measured once per machine and
        cached, or the default grid; see widthgrid.py)."""
        key = (provider, mode)
        if key not in self._grids:
            self._grids[key] = widthgrid.load(self.registry, provider, mode)
        return self._grids[key]

    def apply(self, plan: Plan) -> None:
        """Apply a plan made on the current graph; group ids refer to the current groups."""
        self.run_pass(ChannelRemoval(self.depgraph, plan))
        self.plans.append(plan)
        self.recipe.add(CHANNELS, plan)

    def replay(self, recipe: Recipe) -> None:
        """Re-apply a saved recipe (or plan) made on this model: every step, in order."""
        recipe.replay(self)

    def run_pass(self, graph_pass: GraphPass) -> PassResult:
        """Run a graph pass on the current model and follow its map (shapes inferred again where
        it changed anything)."""
        result = graph_pass.run(self.graph)
        edits = result.edit_map(self.graph)
        self.passes.append(result)
        if result.graph is not self.graph:
            self._set(self._reinfer(result.graph))
            self.edits = self.edits.then(edits)
        return result

    # --- depth
    def blocks(self) -> Discovery:
        """The residual blocks of the current model that can be replaced by their skip path."""
        return find_blocks(self.graph, self.registry)

    def score_blocks(self, data: CalibrationSet | None = None, provider: str = "cpu", progress=None,
                     discovery: Discovery | None = None) -> list[ScoredBlock]:
        """Every removable block with its scores: ``weights`` always, ``influence`` and ``output``
        on ``data`` (see :mod:`onnxprune.depth`)."""
        discovery = discovery or self.blocks()
        tables = {DepthScore.WEIGHTS.value: weight_scores(self.graph, self.registry, discovery.blocks)}
        if data is not None and discovery.blocks:
            graph = reshare_params(self.graph, self._copies)
            tables[DepthScore.INFLUENCE.value] = influence_scores(graph, discovery.blocks, data, provider)
            tables[DepthScore.OUTPUT.value] = output_scores(
                graph, discovery.blocks, lambda b: reshare_params(self._without([b.key]), self._copies), data,
                provider, progress=progress)
        return scored(discovery, tables)

    def _without(self, keys: list[BlockKey]) -> Graph:
        return remove_blocks(self.graph, self.registry, keys).run(self.graph).graph

    def remove_blocks(self, n: int, data: CalibrationSet | None = None, score: str | None = None,
                      provider: str = "cpu", progress=None) -> list[dict]:
        """Remove the ``n`` least important residual blocks (fewer where fewer do not overlap);
        return what was removed (JSON-able: join node and skip tensor identify each block in the
        graph it was removed from, with its MACs and params share and its scores).

        ``score``: weights, influence or output (default: output with ``data``, else weights)."""
        by = DepthScore(score) if score else default_score(data is not None)
        if by.data_driven and data is None:
            raise PlanError(f"the {by.value} score of blocks is measured on calibration data: give data")
        items = self.score_blocks(data if by.data_driven else None, provider, progress)
        chosen = choose(items, n, by)
        params, macs = self.params(), self.macs()
        records = [record(item, by, params, macs) for item in chosen]
        self.remove_block_keys([item.block.key for item in chosen])
        self.removed_blocks.extend(records)
        return records

    def remove_block_keys(self, keys: list[BlockKey]) -> PassResult | None:
        """Remove the blocks (join node, skip tensor) of the current graph; recorded in the recipe."""
        keys = [tuple(k) for k in keys]
        if not keys:
            return None
        result = self.run_pass(remove_blocks(self.graph, self.registry, keys))
        check_removed(result, keys)
        self.recipe.add(BLOCKS, {"blocks": [{"join": join, "skip": skip} for join, skip in keys]})
        return result

    def fuse(self, options: FuseOptions | None = None) -> PassResult:
        """Fuse and re-parameterize, exactly and without data (see :mod:`onnxprune.passes.fusion`):
        BatchNorm and per-channel constants into layers, parallel and consecutive layers into one.
        Run it after pruning and recovery (BatchNorm re-estimation needs its BatchNorms)."""
        from .passes.fusion import Fuse  # late: fusion imports the engine
        options = (options or FuseOptions()).check()
        result = self.run_pass(Fuse(self.registry, self._copies, options))
        self.recipe.add(FUSE, {"kinds": list(options.kinds)})
        return result

    def prune(self, options: PruneOptions | None = None, *, data: CalibrationSet | None = None,
              provider: str = "cpu", after_step: StepHook | None = None, plan_latency: PlanLatency | None = None,
              **kwargs) -> Plan | None:
        """Prune by the options, in ``options.steps`` rounds; return the plan of all rounds on the original graph.

        With ``options.depth``, the least important blocks go first (:meth:`remove_blocks`), then
        the width rounds run on the shallower model.

        Each round re-scores the model the previous one left. ``after_step(pruner, step)`` runs after every
        round (1-based): the place for recovery, so the next round scores the recovered weights. The
        returned plan re-applied to the original model gives the same structure (None in the rare case
        that a group could not be followed across rounds; ``self.plans`` then holds each round's plan).
        """
        options = (options or PruneOptions()).with_(**kwargs).check()
        if options.depth:
            self.remove_blocks(options.depth, data, options.depth_score, provider)
        self._analyse_for(options)
        lineage, rounds = Lineage(self.depgraph), []
        for step in range(1, options.steps + 1):
            plan = self.plan(round_options(options, step, options.steps), data=data, provider=provider,
                             history=lineage.history(self.depgraph), plan_latency=plan_latency)
            lineage.record(self.depgraph, plan)
            self.apply(plan)
            rounds.append(plan)
            if after_step is not None:
                after_step(self, step)
        if len(rounds) == 1:
            return rounds[0]
        composed = lineage.plan(rounds[-1].criterion, rounds[-1].ratio, rounds[0].skipped)
        if composed is not None:  # one step on the graph the rounds started from, not one per round
            del self.recipe.steps[-len(rounds):]
            self.recipe.add(CHANNELS, composed)
        return composed

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
        settings = options.latency
        reference = timing.session(self._original_model(), provider, settings.threads)
        feeds = make_inputs(self.original_graph, seed=options.seed)

        def latency(graph: Graph) -> float:
            candidate = timing.session(reshare_params(graph, self._copies), provider, settings.threads)
            return timing.compare([reference, candidate], feeds, provider, options=settings).ratio
        return latency

    def _plan_latency(self, options: PruneOptions, provider: str) -> PlanLatency | None:
        """A plan on the current graph, applied, timed against the original model (one thread); None
        where the model's inputs have sizes only known at run time (nothing to time it with)."""
        try:
            feeds = make_inputs(self.original_graph, seed=options.seed)
        except ShapeError:
            return None

        def latency(plan: Plan) -> LatencyRatio:
            graph = reshare_params(apply_plan(self.depgraph, plan), self._copies)
            return compare_latency(self._original_model(), graph, feeds, provider, options.latency)
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
        if options.bn_shift is None:
            options = dataclasses.replace(options, bn_shift=bool(self.removed_blocks))
        data = data if data is not None else self.random_inputs(64, options.seed)
        graph, result = recover(self.original_graph, self.graph, self.edits, data, self.registry, options, progress)
        if result.kept and graph is not self.graph:
            self._set(graph)
        self.recoveries.append(result)
        return result

    def _reinfer(self, graph: Graph) -> Graph:
        """Shapes after a pass: carried by the pass, checked by onnx's fast inference (symbolic
        inference runs once per model, at load; see onnx_in.refresh)."""
        return onnx_in.refresh(graph, self.input_shapes)

    # --- output
    def to_model(self) -> onnx.ModelProto:
        return onnx_out.to_model(self.output_graph())

    def output_graph(self) -> Graph:
        """The current graph as it is written (shared weights shared again); weights by reference."""
        return reshare_params(self.graph, self._copies)

    def check(self) -> None:
        """onnx.checker on the current model, its large weights left out (they are arrays of their
        declared type and shape by construction: nothing of them is copied to check it)."""
        check(onnx_out.to_model(self.output_graph(), onnx_out.Weights.EXTERNAL))

    def stage(self, out: Outputs, path: str | os.PathLike, options: SaveOptions | None = None) -> None:
        """Stage the current model for ``path`` in ``out`` (see :mod:`onnxprune.files`), each weight
        streamed to the file straight from its array (:func:`onnx_out.write_graph`): external
        data next to it when the input had it, when it passes 2 GB, or when ``options`` say so."""
        graph = self.output_graph()
        external = (options or SaveOptions()).external(self.external_input, onnx_out.needs_external_data(graph))
        onnx_out.stage_graph(out, graph, path, external)

    def feeds(self, inputs: str | None = None, seed: int = 0) -> dict:
        """Validation inputs: the arrays of an .npz file, or random ones (seeded) of the analysed shapes."""
        return make_inputs(self.original_graph, inputs, seed)

    def run_original(self, feeds: dict, provider: str = "cpu", threads: int | None = None) -> Reference:
        """Run the unpruned model (before pruning, so its own failures are reported as such);
        ``threads``: its session is then fit for timing at that thread count (see :meth:`validate`)."""
        return run_reference(self._original_model(), feeds, provider, threads)

    def validate(self, inputs: str | None = None, provider: str = "cpu", runs: int = 20,
                 feeds: dict | None = None, reference: Reference | None = None,
                 latency: LatencyOptions | None = None) -> ValidationResult:
        """Checker, onnxruntime and output shapes, then latency side by side with the original
        (``runs``: at least that many interleaved rounds, 0: not timed; ``latency``: how, see
        onnxprune.latency). ``result.latency.warning()`` is set when the pruned model is not faster."""
        feeds = self.feeds(inputs) if feeds is None else feeds
        return validate(self._original_model(), self.output_graph(), feeds, provider, runs, reference, latency)

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

    def save(self, path: str | os.PathLike, check_model: bool = True, external_data: bool = False) -> None:
        """Check and write the current model (external data: see :meth:`stage`)."""
        if check_model:
            self.check()
        with atomic_outputs() as out:
            self.stage(out, path, SaveOptions(external_data))


def _speed_check(options: PruneOptions) -> bool:
    if options.never_slower is not None:
        return options.never_slower
    return os.environ.get(SPEED_CHECK_ENV, "1") not in ("0", "")


def _on_the_finest_grid_needed(run: Callable[[PruneOptions, WidthGrid | None], SearchResult],
                                options: PruneOptions, grid: WidthGrid | None) -> tuple[SearchResult, WidthGrid | None]:
    """The target searched on the width grid, or where it cannot land within tolerance there (small
    groups: a step of 8 in a 16-channel layer leaves two widths), on grids 2, 4, ... times finer."""
    results = [(run(options, grid), grid)]
    divisor = 2
    while not results[-1][0].met and grid is not None and max(grid.steps.values(), default=1) >= divisor:
        finer = grid.finer(divisor)
        results.append((run(options, finer), finer))
        divisor *= 2
    if results[-1][0].met:
        return results[-1]
    return min(results, key=lambda r: abs(r[0].reached - r[0].target))


def _coarser(options: PruneOptions, grid: WidthGrid | None, factor: int) -> tuple[PruneOptions, WidthGrid | None]:
    """The same options on a grid ``factor`` times coarser (an explicit --round-to N: multiples of N * factor)."""
    if options.round_to is not None:
        return options.with_(round_to=options.round_to * factor), None
    return options, grid.coarser(factor)


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


__all__ = ["Pruner", "PruneOptions", "RecoveryOptions", "FuseOptions", "ensure_distinct", "ensure_writable", "CRITERIA"]
