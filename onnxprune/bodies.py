"""Pruning inside subgraphs (If branches, Loop and Scan bodies).

Loop and Scan bodies are analysed each as a graph of its own: channels that
live entirely inside one (a conv feeding a conv, with the body's own
initializers or Constant nodes as weights) prune there, by the same rules,
scores and ratio as the enclosing graph. What crosses their boundary is a graph
input or output of the body, never pruned, so the node keeps every shape it had.

The branches of a node whose rule ``selects_body`` (If) are analysed flattened
into the enclosing graph (:func:`flatten`): the branch nodes beside the node,
their local names prefixed, each branch's outputs appended to the node's
inputs so its rule ties output k to every branch's output k. Channels inside a
branch and channels that cross into it or come out of it (pruned when every
branch agrees: one group holds them all) prune there; the flat graph is then
folded back into subgraph attributes (:func:`unflatten`).

The enclosing graph's own groups are pruned by the main plan (there, a tensor a
body reads is a barrier that names the subgraph); this pass prunes only groups
with channels in a body. Nested bodies are pruned first, from the inside out.
Weights only: data-driven criteria cannot observe a body's tensors, so bodies are
scored by l2 when the enclosing graph is scored on data.

Each analysis (a Loop/Scan body alone, or one graph's If branches flattened) asks a
:data:`Planner` for its plan, by where it is (``node.attr`` path; flattened or not):
:func:`planner_from` makes them from the options, :class:`Recorded` re-applies plans saved
in a recipe (the report keeps every plan made, for the recipe), so a saved plan rebuilds
the same bodies without scoring again.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from . import onnx_in, onnx_out
from .depgraph import DependencyGraph
from .errors import PlanError
from .ir import Graph
from .options import PruneOptions
from .plan import Plan, make_plan
from .registry import Registry
from .rules import NodeView, call_rule
from .importance import CRITERIA
from .rewrite import apply_plan, kept_per_axis, removed_per_dim
from .widthgrid import WidthGrid

Where = tuple[str, bool]  # a subgraph analysis: (its node.attr path, or the If owners at that path; flattened)
# (where, its dependency graph, the groups it may prune) -> the plan (only decisions that remove channels)
Planner = Callable[[Where, DependencyGraph, set[int]], Plan]


def planner_from(options: PruneOptions, grid: WidthGrid | None = None) -> Planner:
    """Plans by the options (their ratio and budget; bodies by l2 where the options score on data)."""
    if CRITERIA[options.criterion].data_driven:
        options = options.with_(criterion="l2")

    def plan(where: Where, dg: DependencyGraph, wanted: set[int]) -> Plan:
        made = make_plan(dg, options, grid=grid)
        return dataclasses.replace(made, decisions=tuple(d for d in made.decisions if d.removed and d.group in wanted))
    return plan


class Recorded:
    """A Planner that re-applies saved plans (see BodyReport.plans), each checked against the group it
    names; :meth:`check_used` says when a saved plan found no subgraph to go to."""

    def __init__(self, plans: dict[Where, Plan]):
        self.plans, self.used = dict(plans), set()

    def __call__(self, where: Where, dg: DependencyGraph, wanted: set[int]) -> Plan:
        plan = self.plans.get(where)
        if plan is None:
            return Plan(())
        for d in plan.decisions:
            group = dg.groups[d.group] if 0 <= d.group < len(dg.groups) else None
            problem = ("it has no such group" if group is None else
                       f"its group {d.group} is {group.size} channels at {group.root}"
                       if (group.size, str(group.root)) != (d.size, d.root) else
                       f"its group {d.group} cannot be pruned there" if d.group not in wanted else
                       "the channels are out of range or all of them"
                       if any(not 0 <= c < d.size for c in d.removed) or len(set(d.removed)) >= d.size else None)
            if problem:
                raise PlanError(f"subgraph {where[0]}: the plan prunes group {d.group} ({d.size} channels at "
                                f"{d.root}), {problem}")
        self.used.add(where)
        return plan

    def check_used(self) -> None:
        missing = sorted(w for w, _ in set(self.plans) - self.used)
        if missing:
            raise PlanError(f"the plan prunes inside subgraph {', '.join(missing)}, which the model does not have")


@dataclass
class BodyReport:
    """What was pruned inside subgraphs: per subgraph (``node.attr``), groups pruned and channels removed."""

    pruned: dict[str, tuple[int, int]] = field(default_factory=dict)
    plans: dict[Where, Plan] = field(default_factory=dict)  # every plan that removed channels, by where
    # tensors of the enclosing graph that lost channels (If channels crossing into a branch): axis -> kept
    kept: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return sum(c for _, c in self.pruned.values())

    def note(self) -> str | None:
        if not self.pruned:
            return None
        where = ", ".join(f"{name} ({g} groups, {c} ch)" for name, (g, c) in self.pruned.items())
        return f"inside subgraphs: {self.channels} channels removed in {where}"


def prune_bodies(graph: Graph, registry: Registry, planner: Planner, report: BodyReport | None = None,
                 prefix: str = "") -> tuple[Graph, BodyReport]:
    """``graph`` with every subgraph pruned inside, each analysis planned by ``planner`` (a new Graph;
    nodes without bodies are shared)."""
    report = report if report is not None else BodyReport()
    nodes, changed = [], False
    for node in graph.nodes:
        attrs = dict(node.attrs)
        flattened = _selects_body(graph, node, registry)
        for attr in onnx_in.bodies(node):
            body, formal = onnx_in.body_graph(node, attr, graph)
            where = f"{prefix}{node.name}.{attr}"
            pruned, _ = prune_bodies(body, registry, planner, report, prefix=f"{where}/")
            if not flattened:  # a flattened body's own channels prune with the enclosing graph, below
                pruned = _prune_channels(pruned, registry, planner, report, where)
            if pruned is not body:
                attrs[attr] = onnx_out.body_proto(pruned, formal)
        if attrs != node.attrs:
            node = dataclasses.replace(node, attrs=attrs)
            changed = True
        nodes.append(node)
    graph = dataclasses.replace(graph, nodes=nodes) if changed else graph
    return _prune_flattened(graph, registry, planner, report, prefix), report


def _selects_body(graph: Graph, node, registry: Registry) -> bool:
    spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
    return spec is not None and spec.selects_body and bool(onnx_in.bodies(node))


@dataclass(frozen=True)
class Flattened:
    """A graph with the bodies of its ``selects_body`` nodes beside them (see :func:`flatten`)."""

    graph: Graph
    original: Graph
    # (node, attr) -> (the body as read, its formal inputs, the prefix of its local names in the flat graph)
    bodies: dict[tuple[str, str], tuple[Graph, tuple[str, ...], str]]

    def in_body(self, name: str) -> bool:
        """Whether a flat node or tensor name belongs to a body."""
        return any(name.startswith(p) for _, _, p in self.bodies.values())


def flatten(graph: Graph, registry: Registry) -> Flattened | None:
    """``graph`` with every ``selects_body`` node's subgraphs beside it, or None where it has none.

    A body's own names (node outputs, parameters, nodes) get the prefix ``node.attr::``; the
    tensors it reads from the enclosing scope keep theirs, so the dependency graph joins them.
    """
    nodes, params, values = [], dict(graph.params), dict(graph.values)
    bodies: dict[tuple[str, str], tuple[Graph, tuple[str, ...], str]] = {}
    for node in graph.nodes:
        if not _selects_body(graph, node, registry):
            nodes.append(node)
            continue
        read = [onnx_in.body_graph(node, attr, graph) for attr in onnx_in.bodies(node)]
        if any(formal for _, formal in read) or any(len(b.outputs) != len(node.outputs) for b, _ in read):
            nodes.append(node)  # not the shape a selecting node's bodies have: left as it is (a barrier)
            continue
        extra = []
        for attr, (body, formal) in zip(onnx_in.bodies(node), read):
            prefix = f"{node.name}.{attr}::"
            local = {o for n in body.nodes for o in n.outputs if o} | set(body.params)
            rename = {name: prefix + name for name in local}
            nodes.extend(_renamed(n, rename, prefix) for n in body.nodes)
            params.update((rename[k], v) for k, v in body.params.items())
            values.update((rename[k], dataclasses.replace(v, name=rename[k])) for k, v in body.values.items()
                          if k in rename)
            extra += [rename.get(v.name, v.name) for v in body.outputs]
            bodies[(node.name, attr)] = (body, formal, prefix)
        nodes.append(dataclasses.replace(node, inputs=list(node.inputs) + extra, implicit_inputs=[], read_inside={}))
    if not bodies:
        return None
    return Flattened(dataclasses.replace(graph, nodes=nodes, params=params, values=values), graph, bodies)


def _renamed(node, rename: dict[str, str], prefix: str):
    r = lambda name: rename.get(name, name)  # noqa: E731
    return dataclasses.replace(node, name=prefix + node.name, inputs=[r(t) for t in node.inputs],
                               outputs=[r(t) for t in node.outputs], implicit_inputs=[r(t) for t in node.implicit_inputs],
                               read_inside={r(k): v for k, v in node.read_inside.items()})


def unflatten(flat: Flattened, new: Graph, kept) -> Graph:
    """A flat graph after a rewrite (``kept``: flat tensor -> axis -> kept indices) folded back: the
    bodies' nodes and parameters back into their subgraph attributes, with their own names."""
    originals = flat.original.node_by_name
    attrs_of: dict[str, dict] = {}
    for (node_name, attr), (body, formal, prefix) in flat.bodies.items():
        strip = lambda name: name[len(prefix):] if name.startswith(prefix) else name  # noqa: E731
        unrename = {t: strip(t) for n in new.nodes if n.name.startswith(prefix)
                    for t in list(n.inputs) + list(n.outputs) + list(n.implicit_inputs) if t.startswith(prefix)}
        body_nodes = [_renamed(dataclasses.replace(n, name=strip(n.name)), unrename, "")
                      for n in new.nodes if n.name.startswith(prefix)]
        body_params = {strip(k): v for k, v in new.params.items() if k.startswith(prefix)}
        flat_name = lambda name: prefix + name if prefix + name in flat.graph.values or prefix + name in             flat.graph.params else name  # noqa: E731
        rebuilt = dataclasses.replace(body, nodes=body_nodes, params=body_params,
                                      outputs=[_resized(v, kept.get(flat_name(v.name))) for v in body.outputs],
                                      declared={k: _resized(v, kept.get(flat_name(k))) for k, v in body.declared.items()})
        attrs_of.setdefault(node_name, dict(originals[node_name].attrs))[attr] = onnx_out.body_proto(rebuilt, formal)
    nodes = []
    for node in new.nodes:
        if flat.in_body(node.name):
            continue
        if node.name in attrs_of:
            before = originals[node.name]
            node = dataclasses.replace(node, inputs=list(before.inputs), implicit_inputs=list(before.implicit_inputs),
                                       read_inside=dict(before.read_inside), attrs=attrs_of[node.name])
        nodes.append(node)
    params = {k: v for k, v in new.params.items() if not flat.in_body(k)}
    values = {k: v for k, v in new.values.items() if not flat.in_body(k)}
    return dataclasses.replace(new, nodes=nodes, params=params, values=values)


def _resized(value, kept_axes):
    if not kept_axes or value.shape is None:
        return value
    shape = list(value.shape)
    for axis, keep in kept_axes.items():
        shape[axis] = len(keep)
    return dataclasses.replace(value, shape=tuple(shape))


def body_groups(flat: Flattened, dg: DependencyGraph) -> list:
    """Prunable groups of a flat graph with channels in a body (the others are the enclosing graph's)."""
    return [g for g in dg.prunable_groups()
            if any(flat.in_body(e.node) if e.node else flat.in_body(e.tensor) for e in g.ends)]


def _prune_flattened(graph: Graph, registry: Registry, planner: Planner, report: BodyReport,
                     prefix: str) -> Graph:
    flat = flatten(graph, registry)
    if flat is None:
        return graph
    dg = DependencyGraph(flat.graph, registry)
    wanted = {g.id for g in body_groups(flat, dg)}
    if not wanted:
        return graph
    owners = prefix + ", ".join(sorted({name for name, _ in flat.bodies}))
    plan = planner((owners, True), dg, wanted)
    if not plan.decisions:
        return graph
    report.pruned[owners] = (len(plan.decisions), plan.removed_channels)
    report.plans[(owners, True)] = plan
    kept = kept_per_axis(flat.graph, removed_per_dim(dg, plan))
    if not prefix:  # the enclosing graph's own tensors: what the pass's map says they kept
        report.kept.update((k, v) for k, v in kept.items() if not flat.in_body(k))
    return unflatten(flat, apply_plan(dg, plan, kept), kept)


def _prune_channels(body: Graph, registry: Registry, planner: Planner, report: BodyReport,
                    where: str) -> Graph:
    dg = DependencyGraph(body, registry)
    wanted = {g.id for g in dg.prunable_groups()}
    if not wanted:
        return body
    plan = planner((where, False), dg, wanted)
    if not plan.removed_channels:
        return body
    report.pruned[where] = (len(plan.decisions), plan.removed_channels)
    report.plans[(where, False)] = plan
    return apply_plan(dg, plan)


def prune_inside(graph: Graph, registry: Registry, planner: Planner) -> tuple[Graph, tuple]:
    """``graph`` with its subgraphs pruned by ``planner``, and what was removed (hashable: equal when the
    same channels went)."""
    new, report = prune_bodies(graph, registry, planner)
    return new, tuple(sorted((where, tuple((d.group, d.removed) for d in plan.decisions))
                             for where, plan in report.plans.items()))


def has_bodies(graph: Graph) -> bool:
    return any(onnx_in.bodies(node) for node in graph.nodes)


# (id of a subgraph proto) -> (the proto, kept alive so the id stays its own; its Graph and formal inputs)
_READ: dict[int, tuple[object, Graph]] = {}


def _bodies_of(graph: Graph):
    """Every subgraph of the graph's nodes as a Graph (read once per subgraph proto)."""
    for node in graph.nodes:
        for attr in onnx_in.bodies(node):
            yield _body(graph, node, attr)


def _body(graph: Graph, node, attr: str) -> Graph:
    proto = node.attrs[attr]
    if id(proto) not in _READ:
        if len(_READ) > 256:
            _READ.clear()
        _READ[id(proto)] = (proto, onnx_in.body_graph(node, attr, graph)[0])
    return _READ[id(proto)][1]


def prunable_inside(graph: Graph, registry: Registry) -> int:
    """Prunable groups with channels in the graph's subgraphs, nested ones included (as prune_bodies
    finds them: a Loop or Scan body alone, If branches flattened into the graph)."""
    count = 0
    for node in graph.nodes:
        for attr in onnx_in.bodies(node):
            body = onnx_in.body_graph(node, attr, graph)[0]
            count += prunable_inside(body, registry)
            if not _selects_body(graph, node, registry):
                count += len(DependencyGraph(body, registry).prunable_groups())
    flat = flatten(graph, registry) if count or has_bodies(graph) else None
    if flat is not None:
        count += len(body_groups(flat, DependencyGraph(flat.graph, registry)))
    return count


def params_inside(graph: Graph, registry: Registry | None = None) -> int:
    """Parameters of the subgraphs (their initializers and Constant nodes), nested ones included."""
    from .metrics import count_params  # late: metrics counts bodies through this module
    return sum(count_params(body, registry) for body in _bodies_of(graph))


def macs_inside(graph: Graph, registry: Registry) -> int:
    """MACs of the layers inside subgraphs: both branches of an If; a loop's body times its trip count
    where the model fixes it (``OpSpec.trips``: Loop's constant M, Scan's scanned length), else once."""
    from .metrics import count_macs  # late: metrics counts bodies through this module
    total = 0
    for node in graph.nodes:
        attrs = onnx_in.bodies(node)
        if attrs:
            total += trips(graph, node, registry) * sum(count_macs(_body(graph, node, a), registry) for a in attrs)
    return total


def trips(graph: Graph, node, registry: Registry) -> int:
    """How many times ``node`` runs its bodies, where its rule knows (1 where not)."""
    spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
    if spec is None or spec.trips is None:
        return 1
    count = call_rule("trips", node, spec.trips, NodeView(node, graph))
    return 1 if count is None else max(0, int(count))


def downstream(graph: Graph, nodes: set[str]) -> set[str]:
    """Tensors computed by the named nodes and everything computed from them."""
    changed: set[str] = set()
    for node in graph.nodes:  # topological order
        if node.name in nodes or any(t in changed for t in list(node.inputs) + node.implicit_inputs if t):
            changed.update(o for o in node.outputs if o)
    return changed


class BodyPruning:
    """The pass: prune every subgraph inside (see :func:`prune_bodies`), planned by ``planner``. Names
    are kept; the outputs of the nodes whose bodies changed, and everything after them, hold other
    values. ``report`` (after :meth:`run`): what was pruned, and the plans, for a recipe."""

    name = "subgraph pruning"

    def __init__(self, registry: Registry, planner: Planner):
        self.registry, self.planner = registry, planner
        self.report = BodyReport()

    def run(self, graph: Graph):
        from .passes import PassResult, same_names  # late: passes import the engine
        self.report = BodyReport()
        new, report = prune_bodies(graph, self.registry, self.planner, self.report)
        if new is graph:
            return PassResult(self.name, graph)
        from .passes.layers import changed_values
        before = graph.node_by_name
        touched = {n.name for n in new.nodes if n.name in before and any(
            n.attrs[a] is not before[n.name].attrs.get(a) for a in onnx_in.bodies(n))}
        changed = downstream(new, touched) | changed_values(new, report.kept, self.registry)
        edits = dataclasses.replace(same_names(graph, new), kept=report.kept, changed=frozenset(changed))
        note = report.note()
        return PassResult(self.name, new, report.channels, (note,) if note else (), edits=edits)

