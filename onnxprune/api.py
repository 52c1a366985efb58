"""The Python API: load a model, look at its groups, prune, validate, save."""
from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx

from . import onnx_in, onnx_out
from .blocks import BlockKey, Discovery, find_blocks
from .bodies import BodyPruning, Planner, has_bodies, planner_from, prunable_inside, prune_inside
from .calibration import CalibrationSet, has_batch_axis
from .depth import DepthScore, ScoredBlock, choose, default_score, influence_scores, output_scores, record, scored, \
    weight_scores
from .errors import ShapeError
from .depgraph import DependencyGraph, Group
from .derive import after_removal
from .fidelity import Fidelity, measure
from .files import Outputs, PathPlan, atomic_outputs
from .importance import CRITERIA
from .ir import Graph
from .metrics import count_macs, count_params
from .options import BudgetMode, FuseOptions, LatencyOptions, PruneOptions, RecoveryOptions, SaveOptions
from .edits import EditMap, Kept
from .passes import GraphPass, PassResult, run_passes
from .passes.fold_shapes import FoldShapeArithmetic
from .passes.fold_weights import FoldConstantWeights
from .passes.remove_blocks import check_removed, remove_blocks
from .plan import GroupDecision, Plan, make_plan
from .recipe import ACTIVATIONS, BLOCKS, CHANNELS, FUSE, SUBGRAPHS, Recipe, subgraphs_payload
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
from . import depthwidth, widthgrid
from .widthgrid import WidthGrid

StepHook = Callable[["Pruner", int], None]
Measuring = Callable[[Iterable], Iterable]  # wraps the jobs of a measurement, e.g. in a tqdm bar
# the sensitivity budget's measurements: each unit pruned alone at these ratios, on at most this many
# samples (its cost: units x ratios runs of the pruned model on them)
BUDGET_RATIOS = DEFAULT_RATIOS
BUDGET_SAMPLES = 64
PlanLatency = Callable[[Plan], LatencyRatio]  # a plan on the current graph -> its latency over the original's
# graphs -> each one's latency over the original's, measured side by side (default: onnxruntime, see
# Pruner.latency_of); tests inject a latency model here
GraphLatency = Callable[[list[Graph]], list[LatencyRatio]]
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
        self.removed_activations: list[dict] = []  # every activation removed (UPDP), see remove_activations
        self.body_notes: list[str] = []  # what pruning inside subgraphs removed (bodies.BodyPruning)
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
        reading_shapes = registry.passes() + ([FoldShapeArithmetic(registry)] if onnx_in.declared_static(model) else [])
        passes = [FoldConstantWeights(registry)] + reading_shapes
        folded, results = run_passes(graph, passes)
        if input_shapes and any(r.changed for r in results[len(passes) - len(reading_shapes):]):
            # again on the dims the file fixes: a size pinned from a dim --input-shape fixed (a Reshape
            # target's batch) would hold at that size alone, and the written model must run at every size
            # the file declares (only here: inference at the declared dims can be slow)
            folded, results = run_passes(onnx_in.to_graph(model, None, mapped), passes)
            if any(r.changed for r in results):
                graph = onnx_in.reinfer(folded, input_shapes)
        elif any(r.changed for r in results):
            graph = onnx_in.refresh(folded, input_shapes)
        pruner = cls(graph, registry, model, input_shapes, analysis)
        pruner.notes = [note for r in results for note in r.notes]
        return pruner

    def _set(self, graph: Graph, depgraph: DependencyGraph | None = None) -> None:
        """Make ``graph`` current; ``depgraph``: its dependency graph where already known."""
        self.graph = graph
        self.depgraph = depgraph or DependencyGraph(graph, self.registry, analysis=self.analysis)

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

    def prunable_inside_subgraphs(self) -> int:
        """Prunable groups inside If/Loop/Scan bodies (each analysed as a graph of its own; see bodies.py)."""
        return prunable_inside(self.graph, self.registry) if has_bodies(self.graph) else 0

    def group_of(self, node: str, channel: int | None = None, port: Port = OUT(0)) -> Group:
        return self.depgraph.group_of(node, channel, port)

    def params(self) -> int:
        return count_params(reshare_params(self.graph, self._copies), self.registry)

    def macs(self) -> int:
        return count_macs(self.graph, self.registry)

    # --- pruning
    def plan(self, options: PruneOptions | None = None, *, data: CalibrationSet | None = None,
             provider: str = "cpu", history: dict[int, tuple[int, int]] | None = None,
             plan_latency: PlanLatency | None = None, graph_latency: GraphLatency | None = None,
             progress: Measuring | None = None, refit: RecoveryOptions | None = None, **kwargs) -> Plan:
        """One round's plan on the current graph; ``data``: calibration samples for data-driven criteria
        and the sensitivity budget's measurements (``progress`` wraps those; e.g. a tqdm bar).

        With a size target the budget level is searched (see targets.py) and, with
        ``options.never_slower``, the plan is timed against the original (``latency``:
        how; default onnxruntime on ``provider``, see speed.py); ``history`` is what
        earlier rounds of ``--steps`` removed."""
        options = (options or PruneOptions()).with_(**kwargs).check()
        self._analyse_for(options)
        grid = self.width_grid(provider, options.width_grid) if options.round_to is None else None
        measured = self._budget_sensitivity(options, data, provider, grid, progress, refit)
        if options.target is None:
            return make_plan(self.depgraph, options, data=data, provider=provider, history=history, grid=grid,
                             sensitivity=measured)
        metric, target = options.target
        fraction = self._fraction(metric, options, provider, graph_latency)
        limits = {"max_evaluations": 12, "close_enough": TOLERANCE / 2} if metric == "latency" else {}

        def run(opts: PruneOptions, widths: WidthGrid | None) -> SearchResult:
            inside = (lambda level: planner_from(_body_options(opts, level), widths)) if has_bodies(self.graph) \
                else None  # the subgraphs pruned at each level, counted in the fraction
            return search(self.depgraph, opts, metric, target, fraction, history, data, provider, grid=widths,
                          sensitivity=measured, subgraphs=inside, **limits)
        result, grid = _on_the_finest_grid_needed(run, options, grid)
        if metric != "latency" and _speed_check(options):
            latency = plan_latency or self._plan_latency(options, provider)
            if latency is not None:
                coarser = [lambda f=f: run(*_coarser(options, grid, f)) for f in COARSER]
                result = never_slower(result, coarser, latency)
        self.searches.append(result)
        return result.plan

    def _budget_sensitivity(self, options: PruneOptions, data: CalibrationSet | None, provider: str,
                            grid: WidthGrid | None, progress: Measuring | None,
                            refit: RecoveryOptions | None = None) -> Sensitivity | None:
        """What a sensitivity budget allocates by: each unit it may prune, pruned alone at
        BUDGET_RATIOS and measured on at most BUDGET_SAMPLES of ``data`` (None for other budgets);
        ``refit``: measured after this recovery (fitted on the same samples)."""
        if options.budget_mode is not BudgetMode.SENSITIVITY:
            return None
        if data is None:
            raise PlanError("--budget sensitivity measures each layer's output error on calibration data: "
                            "give --calib FILE.npz")
        free = {g.id for g in self.depgraph.prunable_groups() if options.prunes(g.kind)}
        sample = data.take(BUDGET_SAMPLES)
        return self.sensitivity(sample, ratios=BUDGET_RATIOS, options=options, provider=provider,
                                progress=progress, grid=grid, only=free,
                                refit=None if refit is None else self._refit(sample, refit))

    def _refit(self, data: CalibrationSet, options: RecoveryOptions) -> Callable[[Plan, Graph], Graph]:
        """plan, pruned graph (the plan on the current one) -> the pruned graph recovered on all of
        ``data`` (nothing held out, never undone: the measurement that follows is the judge)."""
        options = dataclasses.replace(options, holdout=0.0, undo_if_worse=False)

        def refit(plan: Plan, pruned: Graph) -> Graph:
            result = ChannelRemoval(self.depgraph, plan).run(self.graph)
            graph, _ = recover(self.original_graph, result.graph, self.edits.then(result.edit_map(self.graph)),
                               data, self.registry, options)
            return graph
        return refit

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
        if plan.decisions:  # an empty plan changes nothing: no step to save
            self.recipe.add(CHANNELS, plan)

    def prune_subgraphs(self, planner: Planner) -> PassResult:
        """Prune inside the model's If/Loop/Scan bodies (see bodies.py), each analysis planned by
        ``planner``; the plans it made are recorded in the recipe."""
        graph_pass = BodyPruning(self.registry, planner)
        result = self.run_pass(graph_pass)
        self.body_notes.extend(result.notes)
        if graph_pass.report.plans:
            self.recipe.add(SUBGRAPHS, subgraphs_payload(graph_pass.report.plans))
        return result

    def _prune_subgraphs_after(self, options: PruneOptions) -> None:
        """The subgraphs, after the enclosing graph's rounds: at the options' ratio, or with a target
        as the last search counted them (at its level, on its widths)."""
        if not has_bodies(self.graph):
            return
        planner = planner_from(options) if options.target is None else \
            (self.searches[-1].subgraphs if self.searches else None)
        if planner is not None:
            self.prune_subgraphs(planner)

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
            graph = self._reinfer(result.graph)
            derived = None
            if isinstance(graph_pass, ChannelRemoval) and graph_pass.dg is self.depgraph:
                derived = after_removal(self.depgraph, graph, edits.kept)  # sizes changed, not structure
            self._set(graph, derived)
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
        return what was removed (JSON-able: join node and residual tensor identify each block in the
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
        """Remove the blocks (join node, residual tensor) of the current graph; recorded in the recipe."""
        keys = [tuple(k) for k in keys]
        if not keys:
            return None
        result = self.run_pass(remove_blocks(self.graph, self.registry, keys))
        check_removed(result, keys)
        self.recipe.add(BLOCKS, {"blocks": [{"join": join, "residual": residual} for join, residual in keys]})
        return result

    # --- activations (UPDP)
    def remove_activations(self, n: float, data: CalibrationSet, provider: str = "cpu", progress=None) -> dict:
        """Replace ``n`` activations between two linear layers by the identity (``n`` < 1: that
        fraction of the candidates), those that change the model's outputs least, chosen greedily:
        each round scores every remaining candidate removed with those chosen before it. Fuses
        first (so normalizations fold and layers sit next to each other) and after (so the
        layers around each removed activation merge). Returns what was done (JSON-able):
        candidates, refused (activation -> why its layers would not merge), removed (one record
        per activation, its output change), merged (layers the last fusion merged or folded)."""
        from .passes.remove_activations import candidates
        self.fuse()
        found, refused = candidates(self.graph, self.registry, self._copies)
        count = min(len(found), int(n) if n >= 1 else int(round(n * len(found))))
        graph, chosen, records = reshare_params(self.graph, self._copies), [], []
        for _ in range(count):
            remaining = [c for c in found if c.node not in chosen]
            scores = output_scores(graph, remaining, lambda c: reshare_params(
                self._without_activations(chosen + [c.node]), self._copies), data, provider, progress=progress)
            best = min(remaining, key=lambda c: (scores[c.key], c.node))
            chosen.append(best.node)
            records.append({"node": best.node, "op": self.graph.node_by_name[best.node].op_type,
                            "between": [best.first, best.second], "output_change": scores[best.key]})
        merged = 0
        if chosen:
            self.remove_activation_nodes(chosen)
            merged = self.fuse().changed
        self.removed_activations.extend(records)
        return {"candidates": len(found), "refused": refused, "removed": records, "merged": merged}

    def _without_activations(self, names: list[str]) -> Graph:
        from .passes.remove_activations import remove_activations
        return remove_activations(self.graph, self.registry, names, self._copies).run(self.graph).graph

    def remove_activation_nodes(self, names: list[str]) -> PassResult | None:
        """Replace the activations ``names`` (each between two linear layers of the current graph) by
        the identity; recorded in the recipe."""
        from .passes.remove_activations import check_removed, remove_activations
        names = list(names)
        if not names:
            return None
        result = self.run_pass(remove_activations(self.graph, self.registry, names, self._copies))
        check_removed(result, names)
        self.recipe.add(ACTIVATIONS, {"nodes": names})
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
              graph_latency: GraphLatency | None = None, progress: Measuring | None = None,
              refit: RecoveryOptions | None = None, **kwargs) -> Plan | None:
        """Prune by the options, in ``options.steps`` rounds; return the plan of all rounds on the original graph.

        With ``options.depth``, the least important blocks go first (:meth:`remove_blocks`), then
        the width rounds run on the shallower model; with ``options.remove_activations``, the
        activations go last (:meth:`remove_activations`; recover after it). With ``--target-latency`` and
        no ``options.depth``, how many blocks go is searched with the width
        (:meth:`search_depth_and_width`), in each round: round i of K aims at i/K of the way from the
        original's latency to the target (as every target does with steps), measured against the original.

        Each round re-scores the model the previous one left. ``after_step(pruner, step)`` runs after every
        round (1-based): the place for recovery, so the next round scores the recovered weights. The
        returned plan re-applied to the original model gives the same structure (None in the rare case
        that a group could not be followed across rounds, or blocks went between rounds; ``self.plans``
        then holds each round's plan, and the recipe each round's steps).
        """
        options = (options or PruneOptions()).with_(**kwargs).check()
        if options.remove_activations and data is None:
            raise PlanError("activations to remove are chosen on calibration data: give data")
        if options.depth:
            self.remove_blocks(options.depth, data, options.depth_score, provider)
        self._analyse_for(options)
        depth_width = options.target_latency is not None and options.depth_search and not options.depth
        lineage, rounds, deeper = Lineage(self.depgraph), [], False
        for step in range(1, options.steps + 1):
            this_round = round_options(options, step, options.steps)
            if depth_width:  # blocks removed here, each round: its recipe steps stay one per round
                blocks = len(self.removed_blocks)
                plan = self.search_depth_and_width(this_round, data, provider, graph_latency, lineage)
                deeper = deeper or len(self.removed_blocks) > blocks
            else:
                plan = self.plan(this_round, data=data, provider=provider, history=lineage.history(self.depgraph),
                                 plan_latency=plan_latency, graph_latency=graph_latency, progress=progress,
                                 refit=refit)
            lineage.record(self.depgraph, plan)
            if plan.decisions or not depth_width:
                self.apply(plan)
            rounds.append(plan)
            if after_step is not None:
                after_step(self, step)
        # the rounds as one channel step on the original graph, where no round removed blocks between them
        plan = rounds[0] if len(rounds) == 1 else None if deeper else self._composed(lineage, rounds)
        self._prune_subgraphs_after(options)  # after the composed channel step: a recipe replays in order
        if options.remove_activations:  # last: what it merges no later round could prune
            self.remove_activations(options.remove_activations, data, provider)
        return plan

    def _composed(self, lineage: Lineage, rounds: list[Plan]) -> Plan | None:
        composed = lineage.plan(rounds[-1].criterion, rounds[-1].ratio, rounds[0].skipped)
        if composed is not None:  # one step on the graph the rounds started from, not one per round
            saved = sum(1 for r in rounds if r.decisions)  # an empty round saved no step
            if saved:
                del self.recipe.steps[-saved:]
            if composed.decisions:
                self.recipe.add(CHANNELS, composed)
        return composed

    def prune_group(self, group: Group, channels) -> None:
        """Remove the given channels (indices into ``group.channels``) of one group."""
        plan = Plan((GroupDecision(group.id, str(group.root), group.size, tuple(sorted(int(c) for c in channels))),))
        self.apply(plan)

    def _fraction(self, metric: str, options: PruneOptions, provider: str = "cpu",
                  graph_latency: GraphLatency | None = None) -> Fraction:
        """A pruned graph's MACs, params or latency as a fraction of the original model's."""
        if metric == "macs":
            base = count_macs(self.original_graph, self.registry)
            return lambda graph: count_macs(graph, self.registry) / base
        if metric == "params":
            base = count_params(reshare_params(self.original_graph, self._copies), self.registry)
            return lambda graph: count_params(reshare_params(graph, self._copies), self.registry) / base
        if graph_latency is not None:
            return lambda graph: graph_latency([graph])[0].median
        settings = options.latency
        reference = timing.session(self._original_model(), provider, settings.threads)
        feeds = make_inputs(self.original_graph, seed=options.seed)

        def latency(graph: Graph) -> float:
            candidate = timing.session(reshare_params(graph, self._copies), provider, settings.threads)
            return timing.compare([reference, candidate], feeds, provider, options=settings).ratio
        return latency

    def latency_of(self, graphs: list[Graph], options: LatencyOptions | None = None,
                   provider: str = "cpu", seed: int = 0, feeds: dict | None = None) -> list[LatencyRatio]:
        """Each graph's latency over the original model's, all timed side by side in one interleaved
        measurement (onnxprune.latency), on ``feeds`` (default: random inputs of the analysed shapes)."""
        feeds = make_inputs(self.original_graph, seed=seed) if feeds is None else feeds
        models = [self._original_model()] + [reshare_params(g, self._copies) for g in graphs]
        return list(timing.compare(models, feeds, provider, options=options).ratios)

    def search_depth_and_width(self, options: PruneOptions, data: CalibrationSet | None = None,
                               provider: str = "cpu", graph_latency: GraphLatency | None = None,
                               lineage: Lineage | None = None) -> Plan:
        """``--target-latency`` over depth and width together (see :mod:`onnxprune.depthwidth`):
        remove the chosen blocks from this model and return the width plan to apply after them.

        Each depth is explored on a copy of the model; the blocks chosen are then removed here
        (recorded in the recipe, so a saved plan re-applies them), and the returned plan was made
        on the graph they leave. ``lineage``: what earlier rounds of ``--steps`` removed (caps count
        original channels)."""
        by = DepthScore(options.depth_score) if options.depth_score else default_score(data is not None)
        if by.data_driven and data is None:
            raise PlanError(f"the {by.value} score of blocks is measured on calibration data: give data")
        discovery = self.blocks()
        items = self.score_blocks(data if by.data_driven else None, provider, discovery=discovery) \
            if discovery.blocks else []
        width = options.with_(depth=0, depth_search=False,
                              latency=depthwidth.exploring(options.latency))
        macs0, params_now, macs_now = count_macs(self.original_graph, self.registry), self.params(), self.macs()
        sample = data.take(16) if data is not None else None
        graphs: dict[int, Graph] = {}

        def explore(k: int) -> depthwidth.Candidate | None:
            chosen = choose(items, k, by)
            fork = self._fork()
            fork.remove_block_keys([item.block.key for item in chosen])
            alone = fork._fraction("latency", width, provider, graph_latency)(fork.graph) if k else None
            depth_only = SearchResult(Plan((), width.criterion, 0.0), "latency", options.target_latency,
                                      alone if alone is not None else 1.0, 0.0, 1, 0.0)
            try:
                if alone is not None and alone <= options.target_latency + TOLERANCE:  # depth alone does it
                    plan, result = depth_only.plan, depth_only
                else:
                    plan = fork.plan(width, data=data, provider=provider, graph_latency=graph_latency,
                                     history=lineage.history(fork.depgraph) if lineage is not None else None)
                    result = fork.searches[-1]
            except PlanError:
                if not k:
                    return None
                plan, result = depth_only.plan, depth_only  # the blocks alone; the final timing judges them
            graph = apply_plan(fork.depgraph, plan) if plan.decisions else fork.graph
            if result.subgraphs is not None:  # timed as it will be written: the subgraphs pruned too
                graph = prune_inside(graph, self.registry, result.subgraphs)[0]
            graphs[k] = graph
            cosine = fork.fidelity_of(graph, sample, provider).cosine if sample is not None else None
            return depthwidth.Candidate(k, tuple(item.block.key for item in chosen), result,
                                        count_macs(graph, self.registry) / macs0, cosine)

        def time_all(candidates: list[depthwidth.Candidate]) -> list[LatencyRatio]:
            chosen = [graphs[c.depth] for c in candidates]
            if graph_latency is not None:
                return graph_latency(chosen)
            return self.latency_of(chosen, options.latency, provider, options.seed)
        proxy = f"worst-output cosine on {sample.n_samples} calibration samples" if sample is not None else "MACs kept"
        found = depthwidth.search(depthwidth.ladder(len(choose(items, len(items), by))), explore, time_all,
                                  options.target_latency, proxy)
        best = found.chosen
        chosen = choose(items, best.depth, by)
        self.remove_block_keys([item.block.key for item in chosen])
        self.removed_blocks.extend(record(item, by, params_now, macs_now) for item in chosen)
        evaluations = sum(c.search.evaluations for c in found.candidates) + len(found.candidates)
        self.searches.append(dataclasses.replace(best.search, reached=best.latency.median, depth_width=found,
                                                 evaluations=evaluations, seconds=found.seconds))
        return best.search.plan

    def fresh(self) -> "Pruner":
        """A pruner on the original model, as loaded (folded), with this one's analysis: a recipe
        made here replays on it."""
        pruner = Pruner(self.original_graph, self.registry, self.original, self.input_shapes, self.analysis)
        pruner.source_path, pruner._copies, pruner._grids = self.source_path, self._copies, self._grids
        return pruner

    def _fork(self) -> "Pruner":
        """A copy to explore on: passes replace graphs (never edit them), so only the lists of what
        was done are copied."""
        fork = copy.copy(self)
        fork.plans, fork.searches, fork.passes = list(self.plans), list(self.searches), list(self.passes)
        fork.recoveries, fork.removed_blocks = list(self.recoveries), list(self.removed_blocks)
        fork.recipe = Recipe(list(self.recipe.steps))
        return fork

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
        return self.fidelity_of(self.graph, data, provider)

    def fidelity_of(self, graph: Graph, data: CalibrationSet | None = None, provider: str = "cpu") -> Fidelity:
        """Output agreement of ``graph`` (an edit of this model) with the original on ``data``."""
        data = data if data is not None else self.random_inputs()
        return measure(self.original_graph, reshare_params(graph, self._copies), data, provider)

    def sensitivity(self, data: CalibrationSet | None = None, *, ratios=DEFAULT_RATIOS,
                    options: PruneOptions | None = None, blocks: int = 0, provider: str = "cpu",
                    progress: Measuring | None = None, grid: WidthGrid | None = None,
                    only: set[int] | None = None, refit: Callable[[Plan, Graph], Graph] | None = None) -> Sensitivity:
        """Prune each group (or block of groups) of the current model alone at each ratio and measure
        the outputs' error against the original (see :mod:`onnxprune.sensitivity`)."""
        data = data if data is not None else self.random_inputs()
        return sensitivity.analyze(self.depgraph, self.original_graph, data, ratios=ratios, options=options,
                                   blocks=blocks, provider=provider, progress=progress, grid=grid, only=only, refit=refit,
                                   to_model_graph=lambda g: reshare_params(g, self._copies))

    def save(self, path: str | os.PathLike, check_model: bool = True, external_data: bool = False) -> None:
        """Check and write the current model (external data: see :meth:`stage`)."""
        if check_model:
            self.check()
        with atomic_outputs() as out:
            self.stage(out, path, SaveOptions(external_data))


def _body_options(options: PruneOptions, level: float) -> PruneOptions:
    """Subgraphs pruned at a target search's level: the level as their ratio (a sensitivity budget's
    measurements cover the enclosing graph only: uniform there)."""
    budget = options.budget_mode if options.budget_mode is not BudgetMode.SENSITIVITY else BudgetMode.UNIFORM
    return options.with_(ratio=min(level, 1.0 - 1e-9), target_macs=None, target_params=None, target_latency=None,
                         steps=1, budget=budget.value, global_rank=budget is BudgetMode.GLOBAL)


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
