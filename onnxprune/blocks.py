"""Residual blocks, found from the data flow: sub-graphs that can be replaced by their skip path.

A residual join is a node whose rule says its output is the sum of its inputs
(``OpSpec.sum_of_inputs``) and that adds two activations, y = s + r. Its block is the
branch that computes r: every node whose outputs feed only the branch or the join's r
input (the join post-dominates it), stopping at s. Removing the block (readers of y read
s) is exact for the rest of the graph when r is zero, and keeps every shape when s has y's
shape. A join of more addends, y = Sum(s, f(s), g(s)), holds one block per branch that
reads s: each goes alone (the join keeps the other addends) or with its siblings. Never found from names: ResNet basic and bottleneck blocks, inverted residuals,
Transformer attention and MLP sub-blocks, C2f bottlenecks all come out of the same rule;
projection shortcuts (the branch reads x, not the projected skip), DenseNet concatenations
and added constants (biases) do not.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .ir import Graph, Node
from .registry import Registry
from .rules import NodeView, call_rule

BlockKey = tuple[str, str]  # (join node, residual tensor): a block of one graph, deterministic and serialisable


@dataclass(frozen=True)
class Block:
    id: int  # position among the graph's blocks (join nodes in graph order)
    join: str  # the node computing y = s + r
    skip: str  # s: what readers of y read once the block is gone
    residual: str  # r: the branch's output
    output: str  # y
    nodes: tuple[str, ...]  # the branch, in graph order (the join not included)
    params: int  # weights read by the branch only (they go with it)
    macs: int
    layers: int  # nodes with weights (a matrix view) in the branch
    addends: int = 2  # the join's inputs; with more than two the join stays, less this branch's

    @property
    def key(self) -> BlockKey:
        return (self.join, self.residual)

    @property
    def removed_nodes(self) -> frozenset[str]:
        """The nodes that go with the block (a two-input join too; a larger one stays)."""
        return frozenset(self.nodes) | ({self.join} if self.addends == 2 else frozenset())

    def overlaps(self, other: "Block") -> bool:
        """Whether the two share nodes (nested blocks do: the outer one holds the inner one)."""
        return bool(self.removed_nodes & other.removed_nodes)

    def to_dict(self, params_total: int = 0, macs_total: int = 0) -> dict:
        return {"id": self.id, "join": self.join, "skip": self.skip, "residual": self.residual,
                "nodes": len(self.nodes), "layers": self.layers, "params": self.params, "macs": self.macs,
                "params_share": self.params / params_total if params_total else None,
                "macs_share": self.macs / macs_total if macs_total else None}


@dataclass(frozen=True)
class Refusal:
    join: str
    reason: str


@dataclass
class Discovery:
    """Every residual join of a graph: the removable blocks, and why the other joins are not."""

    blocks: list[Block] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    @property
    def joins(self) -> int:
        return len(self.blocks) + len(self.refused)

    def by_key(self) -> dict[BlockKey, Block]:
        return {b.key: b for b in self.blocks}

    def why_none(self) -> str | None:
        """One line on why no block can be removed (None where some can)."""
        if self.blocks:
            return None
        if not self.refused:
            return "no residual joins (no node adds two activations; a concatenation is no skip path)"
        reasons: dict[str, int] = {}
        for r in self.refused:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        return f"{len(self.refused)} residual joins, none removable: " + "; ".join(
            f"{why} (x{n})" if n > 1 else why for why, n in reasons.items())


def _spec(graph: Graph, registry: Registry, node: Node):
    return registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))


def find_blocks(graph: Graph, registry: Registry) -> Discovery:
    """Every removable residual block of ``graph``, ids in graph order of the joins."""
    found = Discovery()
    constant = graph.constant_derived
    for node in graph.nodes:
        spec = _spec(graph, registry, node)
        if spec is None or not spec.sum_of_inputs:
            continue
        addends = [t for t in node.inputs if t]
        if sum(t not in constant for t in addends) < 2:
            continue  # a bias or a constant added: no join of two paths
        if len(node.inputs) == 2:  # one block at most: the addend that depends on the other
            outcomes = [_block(graph, registry, node, slot) for slot in (0, 1)]
            blocks = [o for o in outcomes if isinstance(o, Block)][:1]
        elif len(addends) != len(node.inputs) or len(addends) != len(set(addends)):
            found.refused.append(Refusal(node.name, "an empty or repeated addend"))
            continue
        else:  # one block per addend that depends on another
            outcomes = [_block(graph, registry, node, slot) for slot in range(len(addends))
                        if addends[slot] not in constant]
            blocks = [o for o in outcomes if isinstance(o, Block)]
        if not blocks:
            reasons = [o for o in outcomes if o != _PARALLEL]
            found.refused.append(Refusal(node.name, reasons[0] if reasons else _PARALLEL))
            continue
        for block in blocks:
            found.blocks.append(dataclasses.replace(block, id=len(found.blocks)))
    return found


_PARALLEL = "neither addend depends on the other (parallel paths, e.g. a projection shortcut)"


def _block(graph: Graph, registry: Registry, join: Node, r_slot: int) -> Block | str:
    """The block whose branch computes input ``r_slot`` of ``join``, or why there is none. Its skip
    is the other addend the branch reads (the first, with more than two)."""
    residual, output = join.inputs[r_slot], join.outputs[0]
    others = [t for slot, t in enumerate(join.inputs) if slot != r_slot]
    if residual in others:
        return "adds a tensor to itself"
    ancestors = _ancestor_nodes(graph, residual)
    skip = next((t for t in others if t not in graph.constant_derived and _reads(graph, ancestors, t)), None)
    if skip is None:  # no data path from s to r
        return _PARALLEL
    branch = _exclusive(graph, ancestors, join, r_slot)
    if not branch:
        return "the residual addend is computed by nodes that also feed other paths"
    layers = sum(_has_weights(graph, registry, graph.node_by_name[n]) for n in branch)
    if not layers:
        return "the branch has no layer with weights"
    if output in graph.graph_output_names and len(others) == 1:
        return "its output is a graph output"
    shapes, out_shape = [graph.shape(t) for t in others], graph.shape(output)
    if None in shapes or out_shape is None:
        return "shape of the skip input or the output unknown (pass --input-shape)"
    if all(tuple(s) != tuple(out_shape) for s in shapes):  # y broadcasts them all: one of y's shape keeps it
        what = f"the skip input {list(shapes[0])} is" if len(others) == 1 else "the other addends are"
        return f"{what} broadcast to {list(out_shape)}"
    ordered = tuple(n.name for n in graph.nodes if n.name in branch)
    return Block(-1, join.name, skip, residual, output, ordered, _params(graph, branch),
                 _macs(graph, registry, branch), layers, len(join.inputs))


def _ancestor_nodes(graph: Graph, tensor: str) -> set[str]:
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        produced = graph.producers.get(stack.pop())
        if produced is None or produced[0].name in seen:
            continue
        node = produced[0]
        seen.add(node.name)
        stack.extend(t for t in list(node.inputs) + list(node.implicit_inputs) if t)
    return seen


def _reads(graph: Graph, nodes: set[str], tensor: str) -> bool:
    return any(c.name in nodes for c, _ in graph.consumers.get(tensor, []))


def _exclusive(graph: Graph, ancestors: set[str], join: Node, r_slot: int) -> set[str]:
    """Ancestors of the join's r input whose every output feeds only the branch or that input."""
    branch: set[str] = set()
    outputs = graph.graph_output_names
    for node in reversed(graph.nodes):  # readers are decided before their producers
        if node.name not in ancestors:
            continue
        produced = [o for o in node.outputs if o]
        if any(o in outputs for o in produced):
            continue
        if all(c.name in branch or (c is join and slot == r_slot)
               for o in produced for c, slot in graph.consumers.get(o, [])):
            branch.add(node.name)
    return branch


def _has_weights(graph: Graph, registry: Registry, node: Node) -> bool:
    """A layer with weights: a node with a cost rule (MACs) reading a constant matrix or kernel."""
    spec = _spec(graph, registry, node)
    if spec is None or spec.macs is None:
        return False
    return any(t in graph.params and graph.params[t].ndim >= 2 and np.issubdtype(graph.params[t].dtype, np.floating)
               for t in node.inputs if t)


def _params(graph: Graph, branch: set[str]) -> int:
    """Elements of floating-point weights that only the branch reads."""
    total = 0
    for name, value in graph.params.items():
        readers = graph.consumers.get(name, [])
        if readers and np.issubdtype(value.dtype, np.floating) and all(c.name in branch for c, _ in readers):
            total += int(value.size)
    return total


def _macs(graph: Graph, registry: Registry, branch: set[str]) -> int:
    total = 0
    for name in branch:
        node = graph.node_by_name[name]
        spec = _spec(graph, registry, node)
        if spec is not None and spec.macs is not None:
            total += int(call_rule("macs", node, spec.macs, NodeView(node, graph)))
    return total
