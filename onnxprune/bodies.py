"""Pruning inside subgraphs (If branches, Loop and Scan bodies), each analysed as a graph of its own.

A body's channels that live entirely inside it (a conv feeding a conv, with the
body's own initializers or Constant nodes as weights) prune there, by the same
rules, scores and ratio as the enclosing graph. What crosses the boundary (the
body's inputs and outputs, tensors it reads from the enclosing scope) is a graph
input or output of the body: never pruned, so the node that holds the body keeps
every shape it had, and the enclosing graph around it prunes as before (the
dependency graph blocks outer tensors a body reads, naming the subgraph).
Nested bodies are pruned first, from the inside out.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import onnx_in, onnx_out
from .depgraph import DependencyGraph
from .ir import Graph
from .options import PruneOptions
from .plan import make_plan
from .registry import Registry
from .rewrite import apply_plan


@dataclass
class BodyReport:
    """What was pruned inside subgraphs: per subgraph (``node.attr``), groups pruned and channels removed."""

    pruned: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return sum(c for _, c in self.pruned.values())

    def note(self) -> str | None:
        if not self.pruned:
            return None
        where = ", ".join(f"{name} ({g} groups, {c} ch)" for name, (g, c) in self.pruned.items())
        return f"inside subgraphs: {self.channels} channels removed in {where}"


def prune_bodies(graph: Graph, registry: Registry, options: PruneOptions, report: BodyReport | None = None,
                 prefix: str = "") -> tuple[Graph, BodyReport]:
    """``graph`` with every subgraph pruned inside (a new Graph; nodes without bodies are shared)."""
    report = report if report is not None else BodyReport()
    nodes, changed = [], False
    for node in graph.nodes:
        attrs = dict(node.attrs)
        for attr in onnx_in.bodies(node):
            body, formal = onnx_in.body_graph(node, attr, graph)
            where = f"{prefix}{node.name}.{attr}"
            pruned, _ = prune_bodies(body, registry, options, report, prefix=f"{where}/")
            pruned = _prune_channels(pruned, registry, options, report, where)
            if pruned is not body:
                attrs[attr] = onnx_out.body_proto(pruned, formal)
        if attrs != node.attrs:
            node = dataclasses.replace(node, attrs=attrs)
            changed = True
        nodes.append(node)
    return (dataclasses.replace(graph, nodes=nodes) if changed else graph), report


def _prune_channels(body: Graph, registry: Registry, options: PruneOptions, report: BodyReport,
                    where: str) -> Graph:
    dg = DependencyGraph(body, registry)
    if not dg.prunable_groups():
        return body
    plan = make_plan(dg, options)
    if not plan.removed_channels:
        return body
    report.pruned[where] = (sum(1 for d in plan.decisions if d.removed), plan.removed_channels)
    return apply_plan(dg, plan)


def has_bodies(graph: Graph) -> bool:
    return any(onnx_in.bodies(node) for node in graph.nodes)


# (id of a subgraph proto) -> (the proto, kept alive so the id stays its own; its Graph and formal inputs)
_READ: dict[int, tuple[object, Graph]] = {}


def _bodies_of(graph: Graph):
    """Every subgraph of the graph's nodes as a Graph (read once per subgraph proto)."""
    for node in graph.nodes:
        for attr in onnx_in.bodies(node):
            proto = node.attrs[attr]
            if id(proto) not in _READ:
                if len(_READ) > 256:
                    _READ.clear()
                _READ[id(proto)] = (proto, onnx_in.body_graph(node, attr, graph)[0])
            yield _READ[id(proto)][1]


def prunable_inside(graph: Graph, registry: Registry) -> int:
    """Prunable groups inside the graph's subgraphs, nested ones included."""
    return sum(len(DependencyGraph(body, registry).prunable_groups()) + prunable_inside(body, registry)
               for body in _bodies_of(graph))


def params_inside(graph: Graph) -> int:
    """Parameters of the subgraphs (their initializers and Constant nodes), nested ones included."""
    from .metrics import count_params  # late: metrics counts bodies through this module
    return sum(count_params(body) for body in _bodies_of(graph))


def macs_inside(graph: Graph, registry: Registry) -> int:
    """MACs of the layers inside subgraphs, each body counted once (both branches of an If; a Loop
    body once, whatever its trip count)."""
    from .metrics import count_macs  # late: metrics counts bodies through this module
    return sum(count_macs(body, registry) for body in _bodies_of(graph))


def downstream(graph: Graph, nodes: set[str]) -> set[str]:
    """Tensors computed by the named nodes and everything computed from them."""
    changed: set[str] = set()
    for node in graph.nodes:  # topological order
        if node.name in nodes or any(t in changed for t in list(node.inputs) + node.implicit_inputs if t):
            changed.update(o for o in node.outputs if o)
    return changed


class BodyPruning:
    """The pass: prune every subgraph inside (see :func:`prune_bodies`). Names are kept; the outputs
    of the nodes whose bodies changed, and everything after them, hold other values."""

    name = "subgraph pruning"

    def __init__(self, registry: Registry, options: PruneOptions):
        self.registry, self.options = registry, options

    def run(self, graph: Graph):
        from .passes import PassResult, same_names  # late: passes import the engine
        new, report = prune_bodies(graph, self.registry, self.options)
        if new is graph:
            return PassResult(self.name, graph)
        touched = {n.name for old, n in zip(graph.nodes, new.nodes) if old is not n}
        names = same_names(graph, new)
        edits = dataclasses.replace(names, changed=frozenset(downstream(new, touched)))
        note = report.note()
        return PassResult(self.name, new, report.channels, (note,) if note else (), edits=edits)

