"""What recovery passes share: finding linear layers and running statistics through the
rules, ordering them front to back, tracking which original channels survive, and
writing new parameter values into a graph copy."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..edits import EditMap, Kept
from ..ir import Graph, Node, Value
from ..registry import Registry
from ..rules import IN, Barrier, LinearForm, Mark, NodeView, RunningStats, Trait, Updates, call_rule


@dataclass
class Layer:
    """A node with a matrix view, in some graph."""

    node: Node
    form: LinearForm

    @property
    def input(self) -> str:
        return self.node.inputs[self.form.input_slot]


def linear_layers(graph: Graph, registry: Registry) -> list[Layer]:
    """Every node whose rule gives a matrix view (in graph order)."""
    layers = []
    for node in graph.nodes:
        spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
        if spec is None or spec.linear is None:
            continue
        form = spec.linear(NodeView(node, graph))
        if form is not None:
            layers.append(Layer(node, form))
    return layers


def layer_named(graph: Graph, registry: Registry, name: str) -> Layer | None:
    node = graph.node_by_name.get(name)
    if node is None:
        return None
    spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
    form = spec.linear(NodeView(node, graph)) if spec is not None and spec.linear is not None else None
    return Layer(node, form) if form is not None else None


def running_stats(graph: Graph, registry: Registry) -> list[tuple[Node, RunningStats]]:
    """Normalizations whose rule declares running statistics held in constants."""
    found = []
    for node in graph.nodes:
        spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
        stats = spec.running_stats if spec is not None else None
        if stats is None:
            continue
        view = NodeView(node, graph)
        if view.const(stats.mean_slot) is not None and view.const(stats.var_slot) is not None:
            found.append((node, stats))
    return found


def original_layer(original: Graph, registry: Registry, edits: EditMap, layer: Layer) -> Layer | None:
    """The layer of the original model that ``layer`` (of the edited model) still is: one of the
    nodes it came from, computing the tensor it computes now from the tensor it reads now.
    None where an edit merged other work into it or rewired its input (a folded
    normalization, a removed block before it): its original matrix is then not its own."""
    for name in edits.node_origins(layer.node.name):
        candidate = layer_named(original, registry, name)
        if candidate is not None and edits.tensors.get(candidate.form.output) == layer.form.output \
                and edits.tensors.get(candidate.input) == layer.input:
            return candidate
    return None


def rewired(original: Graph, edits: EditMap, layer: Layer) -> bool:
    """Whether the layer now reads a tensor none of the original nodes it came from read (the
    layer after a removed block reads the block's input instead of its output)."""
    source = edits.tensor_origin(layer.input)
    read = {t for name in edits.node_origins(layer.node.name) if name in original.node_by_name
            for t in original.node_by_name[name].inputs}
    return bool(read) and source not in read


def after_rewire(original: Graph, edits: EditMap, graph: Graph, registry: Registry) -> set[str]:
    """Layers (node names) of ``graph`` reading, through nodes without weights, a node that an edit
    rewired (readers of a removed block's output read its skip input now): the first layers
    after the edit, whose re-fit can make up for it. The walk stops at layers and at residual
    joins (``OpSpec.sum_of_inputs``): past a join, the next block's first layers read the stream."""
    layers = {layer.node.name for layer in linear_layers(graph, registry)}
    start = [node for node in graph.nodes if _rewired_node(original, edits, graph, node)]
    found = {node.name for node in start if node.name in layers}
    seen, stack = set(found), [node for node in start if node.name not in layers]
    while stack:
        node = stack.pop()
        for out in node.outputs:
            for reader, _ in graph.consumers.get(out, []) if out else ():
                if reader.name in seen:
                    continue
                seen.add(reader.name)
                if reader.name in layers:
                    found.add(reader.name)
                    continue
                spec = registry.lookup(reader.domain, reader.op_type,
                                       graph.meta.opsets.get(reader.domain, graph.opset))
                if spec is None or not spec.sum_of_inputs:
                    stack.append(reader)
    return found


def _rewired_node(original: Graph, edits: EditMap, graph: Graph, node: Node) -> bool:
    """Whether the node reads an activation that none of the original nodes it came from read."""
    read = {t for name in edits.node_origins(node.name) if name in original.node_by_name
            for t in original.node_by_name[name].inputs}
    if not read:
        return False
    return any(edits.tensor_origin(t) not in read for t in node.inputs if t and t not in graph.constant_derived)


def front_to_back(graph: Graph, targets: Iterable[str]) -> list[list[str]]:
    """Targets (node names) in levels: a target's inputs depend only on targets of earlier levels,
    so each level can be fitted from one pass over the data."""
    targets = set(targets)
    depth: dict[str, int] = {}
    level_of: dict[str, int] = {}
    for node in graph.nodes:
        d = max((depth.get(t, 0) for t in list(node.inputs) + node.implicit_inputs if t), default=0)
        if node.name in targets:
            level_of[node.name] = d
            d += 1
        for out in node.outputs:
            depth[out] = d
    levels: list[list[str]] = [[] for _ in range(max(level_of.values(), default=-1) + 1)]
    for node in graph.nodes:
        if node.name in level_of:
            levels[level_of[node.name]].append(node.name)
    return [level for level in levels if level]


def in_passes(levels: list[list[str]], passes: int, size=None, budget: float | None = None) -> list[list[str]]:
    """Levels cut into at most ``passes`` runs of consecutive levels (0: one run per level), each
    run fitted from one pass over the data; a run is also cut where the sizes of its targets
    (``size(name)``) would add up past ``budget``. Within a run, later levels are measured before
    earlier ones are fitted: fewer passes, less exact where fits feed each other."""
    if not levels:
        return []
    count = len(levels) if passes <= 0 else min(passes, len(levels))
    bounds = [round(i * len(levels) / count) for i in range(count + 1)]
    runs: list[list[str]] = []
    for start, stop in zip(bounds, bounds[1:]):
        run, held = [], 0.0
        for level in levels[start:stop]:
            cost = sum(size(name) for name in level) if size is not None else 0.0
            if run and budget is not None and held + cost > budget:
                runs.append(run)
                run, held = [], 0.0
            run.extend(level)
            held += cost
        runs.append(run)
    return runs


def changed_values(graph: Graph, kept: Kept, registry: Registry) -> set[str]:
    """Tensors whose remaining channels no longer hold the original's values.

    Slicing a tensor leaves its kept channels as they were; values change where a node
    mixes channels and lost some of its input channels: a node with its own output
    channels (a rule with ``roots``: Conv, Gemm, ...) or an inexact rule (LayerNorm).
    Everything computed from those changes too.
    """
    changed: set[str] = set()
    for node in graph.nodes:
        inputs = [t for t in list(node.inputs) + node.implicit_inputs if t]
        if any(t in changed for t in inputs):
            changed.update(o for o in node.outputs if o)
            continue
        lost = [t for t in inputs if t in kept and t not in graph.params]
        if not lost:
            continue
        spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
        view = NodeView(node, graph)
        if spec is None or not spec.exact or spec.roots(view) or _reduces_over(spec, view, kept, lost):
            changed.update(o for o in node.outputs if o)
    return changed


def _reduces_over(spec, view: NodeView, kept: Kept, lost: list[str]) -> bool:
    """Whether the node computes a statistic over a lost axis (a written-out LayerNorm's
    ReduceMean): the rule marks that axis :attr:`Trait.STATISTICS`, so the kept channels'
    values stay but the statistic over them changes."""
    for slot, name in enumerate(view.node.inputs):
        if name not in lost:
            continue
        answer = call_rule("couple", view.node, spec.couple, view, IN(slot), tuple(sorted(kept[name])))
        if not isinstance(answer, Barrier) and any(isinstance(item, Mark) and item.trait is Trait.STATISTICS
                                                   for item in answer or ()):
            return True
    return False


def with_updates(graph: Graph, changes: dict[str, Updates]) -> Graph:
    """A copy of ``graph`` with new constant inputs / attributes on the named nodes.

    A constant another node also reads gets a fresh name instead of being changed under it.
    """
    if not changes:
        return graph
    changes = dict(changes)
    for updates in list(changes.values()):
        for name, more in updates.others.items():
            if name in changes:
                raise ValueError(f"two updates for node {name!r}")
            changes[name] = more
    params = dict(graph.params)
    consumers = graph.consumers
    nodes = []
    for node in graph.nodes:
        updates = changes.get(node.name)
        if updates is None:
            nodes.append(node)
            continue
        new = copy.copy(node)
        new.attrs, new.attr_types, new.inputs = dict(node.attrs), dict(node.attr_types), list(node.inputs)
        for key, value in updates.attrs.items():
            new.attrs[key] = value
            new.attr_types.pop(key, None)
        for slot, value in updates.inputs.items():
            while len(new.inputs) <= slot:
                new.inputs.append("")
            name = new.inputs[slot]
            if not name or name not in graph.params or len(consumers.get(name, [])) > 1 \
                    or name in graph.graph_output_names:
                name = _fresh_name(f"{node.name}_in{slot}_recovered", params)
                new.inputs[slot] = name
            params[name] = value
        nodes.append(new)
    return dataclasses.replace(graph, nodes=nodes, params=params)


def _fresh_name(base: str, taken) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def sample_rows(n_rows: int, limit: int, rng: np.random.Generator) -> np.ndarray | None:
    """All rows (None) or a random sorted subset of ``limit`` of them, to bound memory."""
    if limit <= 0 or n_rows <= limit:
        return None
    return np.sort(rng.choice(n_rows, size=limit, replace=False))


def paired_batches(pruned: Graph, pruned_tensors, original: Graph | None, original_tensors, data,
                   batch_size: int, provider: str = "cpu"):
    """Per batch, (pruned model's tensors, original model's tensors) on the same samples."""
    from ..activations import stream  # late: activations imports onnxruntime helpers
    got = stream(prefix(pruned, pruned_tensors), list(pruned_tensors), data, provider, batch_size)
    if original is None:
        for values in got:
            yield values, {}
        return
    ref = stream(prefix(original, original_tensors), list(original_tensors), data, provider, batch_size)
    yield from zip(got, ref)


def prefix(graph: Graph, tensors) -> Graph:
    """The part of ``graph`` that computes ``tensors``, with them as its outputs: early layers
    of a deep model are measured without running the rest of it."""
    wanted = [t for t in dict.fromkeys(tensors) if t in graph.producers]
    if not wanted or any(not getattr(graph.values.get(t), "dtype", 0) for t in wanted):
        return graph
    needed, keep = set(wanted), []
    for node in reversed(graph.nodes):
        if any(o in needed for o in node.outputs):
            keep.append(node)
            needed.update(t for t in list(node.inputs) + node.implicit_inputs if t)
    outputs = [Value(t, graph.values[t].dtype, None) for t in wanted]
    return dataclasses.replace(graph, nodes=keep[::-1], outputs=outputs)


def progress_bar(iterable, desc: str, enabled: bool, total: int | None = None):
    """tqdm on stderr, or the iterable itself when quiet."""
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, total=total, leave=False, unit="level")
