"""The dependency graph (DepGraph): pruning ends, inter/intra edges, grouping.

Every node has input and output *ends*: a port of the node seen along some
axes (a channel axis, or several axes flattened). Ends that share a tensor
along the same axes are joined by inter-layer edges; the operator rules add
intra-layer edges, each with an index mapping. Grouping is a graph search
over channels: two channels are in one group when a chain of edges couples
them. The engine knows no operator names: all operator knowledge comes from
the rules in the registry.
"""
from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

import networkx as nx
import numpy as np

from .errors import InputError
from .ir import Graph
from .mapping import IDENTITY, Identity, Mapping, Modulo, Overlap, Project, Reorder, compose, dense_axis
from .registry import Registry, builtin_registry
from .rules import QUANT_PARAM, Analysis, Barrier, Mark, NodeView, Port, Side, Stored, Trait, call_rule, strict_default
from .shapes import is_symbolic


# An end longer than this joins no group (its index arrays would not fit in memory).
MAX_END_SIZE = 1 << 24


class EndKind(str, Enum):
    """Where an end's channels live (a str, so reports and JSON show the plain word)."""

    OP = "op"  # a node port
    PARAM = "param"  # a constant (initializer or Constant node)
    INPUT = "input"  # a graph input: never pruned
    OUTPUT = "output"  # a graph output: never pruned

    def __str__(self) -> str:
        return self.value


class EdgeKind(str, Enum):
    """Why two ends are coupled in the dependency graph."""

    INTER = "inter"  # ends that share one tensor
    INTRA = "intra"  # an operator rule couples two ports of one node
    ALIAS = "alias"  # one tensor reached along nested axis runs, e.g. (1,) and (1, 2)
    DENSE = "dense"  # a multi-axis end tied to itself so the tensor stays dense


@dataclass(frozen=True, order=True)
class End:
    """One place where channels live: a node port, a parameter, or a graph input/output."""

    kind: EndKind
    tensor: str
    axes: tuple[int, ...]
    node: str = ""
    port: Port | None = None

    def __str__(self) -> str:
        where = f"{self.node}.{self.port}" if self.kind == EndKind.OP else f"{self.kind}:{self.tensor}"
        return f"{where}{list(self.axes)}"


@dataclass(frozen=True, eq=False)
class Slots:
    """Where a group's channels sit at one end, as arrays: channel k holds
    ``index[start[k]:start[k + 1]]`` (ascending); ``owner[i]`` is the channel holding ``index[i]``."""

    index: np.ndarray
    start: np.ndarray
    owner: np.ndarray

    @staticmethod
    def of_owners(index: np.ndarray, owner: np.ndarray, size: int) -> "Slots":
        """From indices sorted by owning channel (and ascending within one)."""
        start = np.zeros(size + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=size), out=start[1:])
        return Slots(index, start, owner)

    def of(self, k: int) -> np.ndarray:
        return self.index[self.start[k]: self.start[k + 1]]

    @property
    def width(self) -> int | None:
        """Indices per channel when every channel holds as many (the usual case), else None."""
        counts = np.diff(self.start)
        return int(counts[0]) if len(counts) and np.all(counts == counts[0]) else None

    def sum_per_channel(self, per_index: np.ndarray) -> np.ndarray:
        """A per-index quantity summed over each channel's indices (in index order, as ndarray.sum)."""
        values = np.asarray(per_index)[self.index]
        width = self.width
        if width is not None:
            return values.reshape(-1, width).sum(axis=1) if width else np.zeros(len(self.start) - 1)
        return np.array([values[a:b].sum() for a, b in zip(self.start[:-1], self.start[1:])])


@dataclass(eq=False)
class Group:
    """Coupled channels that must be removed together.

    ``slots[end]`` says which indices each of the ``size`` channels occupies at that end
    (usually one index; several for grouped convs or flattened features), as arrays:
    nothing per channel is a Python object.
    """

    id: int
    ends: tuple[End, ...]
    size: int
    slots: dict[End, Slots]
    blocked: list[str] = field(default_factory=list)
    root: End | None = None
    traits: frozenset = frozenset()  # Trait marks the rules gave its ends

    @property
    def kind(self) -> str:
        """hidden (normalization statistics span it), heads or head_dim (attention), or channels (MLP, conv...)."""
        if Trait.STATISTICS in self.traits:
            return "hidden"
        if Trait.HEAD_DIM in self.traits:
            return "head_dim"
        return "heads" if Trait.HEADS in self.traits else "channels"

    @property
    def prunable(self) -> bool:
        return not self.blocked and self.size > 1 and any(e.kind == EndKind.PARAM for e in self.ends)

    @property
    def channels(self) -> list[dict[End, np.ndarray]]:
        """``channels[k][end]``: the indices channel k occupies at each end (a view built on demand,
        for inspection; the engine reads :attr:`slots`)."""
        return [{end: s.of(k) for end, s in self.slots.items()} for k in range(self.size)]

    def at(self, end: End, k: int) -> np.ndarray:
        """Indices channel ``k`` occupies at ``end`` (empty where it has none)."""
        slots = self.slots.get(end)
        return slots.of(k) if slots is not None else np.empty(0, np.int64)

    def indices(self, end: End, channels) -> np.ndarray:
        """Indices at ``end`` of the given group channels."""
        slots = self.slots.get(end)
        if slots is None:
            return np.empty(0, np.int64)
        wanted = np.zeros(self.size, dtype=bool)
        wanted[np.asarray(list(channels), dtype=np.int64)] = True
        return np.sort(slots.index[wanted[slots.owner]])  # channels never share an index

    def describe(self) -> str:
        state = "prunable" if self.prunable else ("blocked: " + "; ".join(self.blocked) if self.blocked else "fixed")
        return f"group {self.id}: {self.size} channels, root {self.root}, {len(self.ends)} ends ({state})"


class DependencyGraph:
    """Build from a :class:`Graph` and a rule registry; see :meth:`groups`."""

    def __init__(self, graph: Graph, registry: Registry | None = None, strict: bool | None = None,
                 analysis: Analysis | None = None):
        if registry is None:
            registry = builtin_registry()
        self.strict = strict_default() if strict is None else strict  # see rules.call_rule
        self.analysis = analysis or Analysis()
        self.graph = graph
        self.registry = registry
        self.nx = nx.MultiGraph()
        self.barriers: dict[End, str] = {}
        self.marks: dict[End, list[Mark]] = {}
        self._dims: dict[tuple[str, tuple[int, ...]], list[End]] = {}
        self._expanded: set[End] = set()
        self._intra: dict[End, set] = {}  # end -> (node, port, axes) of every end an intra edge joins it to
        self._order = {n.name: i for i, n in enumerate(graph.nodes)}
        self.derived = False  # True: groups derived from an earlier graph's (see derived())
        self._build()
        self.groups: list[Group] = self._group()

    @classmethod
    def derived(cls, before: "DependencyGraph", graph: Graph, sizes: dict[End, int | None],
                groups: list[Group]) -> "DependencyGraph":
        """The dependency graph of ``graph``, whose groups were derived from ``before``'s (see
        :mod:`onnxprune.derive`): the same ends, barriers and marks; ``sizes``: every end's size
        now. It holds no edges (their index mappings belong to the graph they were read on)."""
        dg = cls.__new__(cls)
        dg.strict, dg.analysis, dg.registry, dg.graph = before.strict, before.analysis, before.registry, graph
        dg.nx = nx.MultiGraph()
        dg.nx.add_nodes_from((end, {"size": size, "tensor": end.tensor}) for end, size in sizes.items())
        dg.barriers, dg.marks, dg._dims = before.barriers, before.marks, before._dims
        dg._expanded, dg._intra = before._expanded, before._intra
        dg._order = {n.name: i for i, n in enumerate(graph.nodes)}
        dg.groups, dg.derived = groups, True
        return dg

    # ---------------------------------------------------------------- build
    def view(self, node_name: str) -> NodeView:
        return NodeView(self.graph.node_by_name[node_name], self.graph, self.analysis)

    def spec(self, node_name: str):
        node = self.graph.node_by_name[node_name]
        opset = self.graph.meta.opsets.get(node.domain, self.graph.opset)
        return self.registry.lookup(node.domain, node.op_type, opset)

    def size(self, end: End) -> int:
        return int(self.nx.nodes[end]["size"])

    def _build(self) -> None:
        self._queue: deque = deque()
        for node in self.graph.nodes:
            spec = self.spec(node.name)
            if spec is None:
                continue
            view = NodeView(node, self.graph, self.analysis)
            for port, axes in call_rule("roots", node, spec.roots, view, strict=self.strict):
                self._reach(view.tensor(port), axes)
        while self._queue:
            tensor, axes = self._queue.popleft()
            for end in self._dims[(tensor, axes)]:
                if end.kind == EndKind.OP:
                    self._expand(end)
        self._join_overlapping_dims()
        self._tie_multi_axis_dims()

    def _reach(self, tensor: str, axes: tuple[int, ...]) -> tuple[str, tuple[int, ...]] | None:
        key = (tensor, axes)
        if key in self._dims:
            return key
        ends = self._ends_of(tensor, axes)
        shape = self.graph.shape(tensor)
        symbolic = [shape[a] for a in axes if is_symbolic(shape[a])] if shape is not None else []
        size = math.prod(int(shape[a]) for a in axes) if shape is not None and not symbolic else None
        too_big = size is not None and not 0 < size <= MAX_END_SIZE  # index arrays would not fit (or a bad dim)
        for end in ends:
            self.nx.add_node(end, size=None if too_big else size, tensor=tensor)
        hub = ends[0]
        for end in ends[1:]:
            self.nx.add_edge(hub, end, kind=EdgeKind.INTER, mapping=IDENTITY, a=hub)
        if symbolic:
            for end in ends:
                self._block(end, f"{tensor} has a run-time size ({symbolic[0].symbol}) along axes {list(axes)}")
        elif size is None:
            for end in ends:
                self._block(end, f"shape of {tensor} unknown (pass --input-shape)")
        elif too_big:
            for end in ends:
                self._block(end, f"{tensor} has {size} elements along axes {list(axes)}, "
                                 f"{'too many' if size > 0 else 'nothing'} to analyse")
        self._dims[key] = ends
        self._queue.append(key)
        return key

    def _ends_of(self, tensor: str, axes) -> list[End]:
        g = self.graph
        ends: list[End] = []
        if tensor in g.producers:
            node, slot = g.producers[tensor]
            ends.append(End(EndKind.OP, tensor, axes, node.name, Port(Side.OUT, slot)))
        elif tensor in g.params:
            ends.append(End(EndKind.PARAM, tensor, axes))
        else:
            ends.append(End(EndKind.INPUT, tensor, axes))
            self._block(ends[-1], f"graph input {tensor}")
        for node, slot in g.consumers.get(tensor, []):
            if slot < 0:
                end = End(EndKind.OP, tensor, axes, node.name, Port(Side.IN, -1))
                bodies = ", ".join(f"{node.name}.{a}" for a in node.read_inside.get(tensor, ())) or node.name
                spec = self.spec(node.name)
                why = ("left to subgraph pruning, which prunes it where every branch agrees"
                       if spec is not None and spec.selects_body
                       else "channels crossing a subgraph boundary are not pruned")
                self._block(end, f"{tensor} crosses into subgraph {bodies} ({node.op_type}): {why}")
            else:
                end = End(EndKind.OP, tensor, axes, node.name, Port(Side.IN, slot))
            ends.append(end)
        if tensor in g.graph_output_names:
            ends.append(End(EndKind.OUTPUT, tensor, axes))
            self._block(ends[-1], f"graph output {tensor}")
        return ends

    def _block(self, end: End, reason: str) -> None:
        self.barriers.setdefault(end, reason)

    def _expand(self, end: End) -> None:
        if end in self._expanded or end in self.barriers:
            return
        self._expanded.add(end)
        node = self.graph.node_by_name[end.node]
        spec = self.spec(end.node)
        if spec is None:
            opset = self.graph.meta.opsets.get(node.domain, self.graph.opset)
            self._block(end, f"{node.op_type} {node.name}: no rule for "
                             f"{node.domain + '::' if node.domain else ''}{node.op_type} at opset {opset}")
            return
        view = NodeView(node, self.graph, self.analysis)
        answer = call_rule("couple", node, spec.couple, view, end.port, end.axes, strict=self.strict)
        if isinstance(answer, Barrier):
            self._block(end, f"{node.op_type} {node.name}: {answer.reason}")
            return
        for link in answer:
            if isinstance(link, Mark):
                self.marks.setdefault(end, []).append(link)
                continue
            tensor = view.tensor(link.port)
            if not tensor:
                continue
            rank = view.rank(link.port)
            if not link.axes:  # the channels would map onto the whole tensor: nothing to keep of it
                self._block(end, f"{node.op_type} {node.name}: maps axes {list(end.axes)} to no axis of {tensor}")
                return
            if rank is None:
                self._block(end, f"{node.op_type} {node.name}: rank of {tensor} unknown")
                return
            axes, mapping = self._canonical(tensor, tuple(a % rank for a in link.axes), link.mapping)
            if axes is None:
                self._block(end, f"{node.op_type} {node.name}: cannot map axes {link.axes} of {tensor}")
                return
            if self._already_linked(end, link.port, axes):
                continue
            key = self._reach(tensor, axes)
            hub = self._dims[key][0]
            if self.nx.nodes[hub]["size"] is None:  # the coupled tensor cannot be pruned: neither can this end
                self._block(end, self.barriers.get(hub, f"shape of {tensor} unknown"))
                return
            other = End(EndKind.OP, tensor, axes, node.name, link.port)
            self.nx.add_edge(end, other, kind=EdgeKind.INTRA, mapping=mapping, a=end)
            self._intra.setdefault(end, set()).add((other.node, other.port, other.axes))
            self._intra.setdefault(other, set()).add((end.node, end.port, end.axes))

    def _already_linked(self, end: End, port: Port, axes) -> bool:
        """The rule already coupled this end to ``port`` along other axes (from that side).

        Reshapes are ambiguous backwards: [N, C*H*W] maps to [N, C, H, W]
        either channel-wise or element-wise. The direction the search came
        from has already fixed the coupling, so the other reading is skipped.
        """
        return any(node == end.node and other_port == port and other_axes != axes
                   for node, other_port, other_axes in self._intra.get(end, ()))

    def _canonical(self, tensor: str, axes: tuple[int, ...], mapping: Mapping):
        """Sort the axes of an end so every end of a tensor flattens it the same way."""
        shape = self.graph.shape(tensor)
        if shape is None or len(set(axes)) != len(axes):
            return None, mapping
        if list(axes) == sorted(axes):
            return axes, mapping
        order = tuple(np.argsort(axes))
        sizes = tuple(shape[a] for a in axes)
        n_mid = int(np.prod(sizes))
        return tuple(sorted(axes)), compose(mapping, Reorder(sizes, order), n_mid)

    def _join_overlapping_dims(self) -> None:
        """A tensor reached along axes (1,) and (1, 2) must prune consistently."""
        by_tensor: dict[str, list[tuple[int, ...]]] = {}
        for tensor, axes in self._dims:
            by_tensor.setdefault(tensor, []).append(axes)
        for tensor, variants in by_tensor.items():
            if len(variants) < 2:
                continue
            shape = self.graph.shape(tensor)
            variants.sort(key=len)
            for i, short in enumerate(variants):
                for long in variants[i + 1:]:
                    hub_s, hub_l = self._dims[(tensor, short)][0], self._dims[(tensor, long)][0]
                    if long[: len(short)] == short and shape is not None:
                        tail = int(np.prod([shape[a] for a in long[len(short):]]))
                        self.nx.add_edge(hub_s, hub_l, kind=EdgeKind.ALIAS, mapping=Overlap(tail, 1), a=hub_s)
                    elif long[len(long) - len(short):] == short and shape is not None:
                        # (3,) inside (1, 3): long's flat index i*inner + j is short's j
                        inner = int(np.prod([shape[a] for a in short]))
                        self.nx.add_edge(hub_l, hub_s, kind=EdgeKind.ALIAS, mapping=Modulo(inner), a=hub_l)
                    elif set(short) & set(long):
                        reason = f"{tensor} would be pruned along {short} and {long}"
                        for end in self._dims[(tensor, short)] + self._dims[(tensor, long)]:
                            self._block(end, reason)

    def _tie_multi_axis_dims(self) -> None:
        """Ends spanning several axes prune along one of them (see ``dense_axis``), so the tensor stays dense."""
        for (tensor, axes), ends in self._dims.items():
            shape = self.graph.shape(tensor)
            if len(axes) < 2 or shape is None:
                continue
            sizes = tuple(shape[a] for a in axes)
            real = [k for k, s in enumerate(sizes) if s > 1]
            if len(real) > 1:
                self.nx.add_edge(ends[0], ends[0], kind=EdgeKind.DENSE, mapping=Project(sizes, dense_axis(sizes)),
                                 a=ends[0])

    # ------------------------------------------------------------- grouping
    def _group(self) -> list[Group]:
        """Connected channels, by arrays: every index of every sized end is one element; the
        edges' index pairs join elements (union-find); components with the same set of ends
        are the channels of one group, ordered by their first element.

        Ends joined by an identity edge hold the same channels index for index (a residual
        stream read by every layer): they are joined first, per end, and the array work runs on
        one block of elements per such class, its first end standing for the rest."""
        ends = [e for e in self.nx.nodes if self.nx.nodes[e]["size"] is not None]
        ends.sort(key=self._end_order)
        number = {end: k for k, end in enumerate(ends)}
        sizes = np.array([self.size(e) for e in ends], dtype=np.int64)
        edges = []
        head = list(range(len(ends)))  # union-find over ends; each class labelled by its first end

        def find(k: int) -> int:
            while head[k] != k:
                head[k] = head[head[k]]
                k = head[k]
            return k

        for u, v, data in self.nx.edges(data=True):
            if u not in number or v not in number:
                continue
            a, b = (u, v) if data["a"] == u else (v, u)
            if isinstance(data["mapping"], Identity) and sizes[number[a]] == sizes[number[b]]:
                ra, rb = find(number[a]), find(number[b])
                head[max(ra, rb)] = min(ra, rb)
            else:
                edges.append((a, b, data["mapping"]))
        stand_for = np.array([find(k) for k in range(len(ends))], dtype=np.int64)
        blocks = np.flatnonzero(stand_for == np.arange(len(ends)))  # the first end of each class
        block_of_end = np.searchsorted(blocks, stand_for)
        block_sizes = sizes[blocks]
        offsets = np.zeros(len(blocks) + 1, dtype=np.int64)
        np.cumsum(block_sizes, out=offsets[1:])
        total = int(offsets[-1])
        us, vs = [], []
        for a, b, mapping in edges:
            na, nb = int(sizes[number[a]]), int(sizes[number[b]])
            try:
                ia, ib = mapping.pairs(na, nb)
            except ValueError:
                raise self._inconsistent(a, b) from None
            if len(ia) and (ia.min() < 0 or ia.max() >= na or ib.min() < 0 or ib.max() >= nb):
                raise self._inconsistent(a, b)  # e.g. a grouped weight whose size the group count does not divide
            us.append(ia + offsets[block_of_end[number[a]]])
            vs.append(ib + offsets[block_of_end[number[b]]])
        if total == 0:
            return []
        parent = np.arange(total, dtype=np.int64)
        if us:
            parent = _union_find(parent, np.concatenate(us), np.concatenate(vs))
        n_blocks = len(blocks)
        block_of = np.repeat(np.arange(n_blocks, dtype=np.int64), block_sizes)
        local = np.arange(total, dtype=np.int64) - offsets[block_of]
        # components, numbered by their first element (union-find labels each by its minimum)
        is_first = parent == np.arange(total, dtype=np.int64)
        comp_of = (np.cumsum(is_first) - 1)[parent]
        n_comps = int(np.count_nonzero(is_first))
        # each component's signature: the blocks it touches (ascending); components with one signature
        # form one group, the groups numbered in order of their first component
        pairs = distinct(comp_of * n_blocks + block_of)
        pair_comp, pair_block = pairs // n_blocks, pairs % n_blocks
        bounds = np.zeros(n_comps + 1, dtype=np.int64)
        np.cumsum(np.bincount(pair_comp, minlength=n_comps), out=bounds[1:])
        signatures: dict[bytes, int] = {}
        group_of_comp = np.empty(n_comps, dtype=np.int64)
        for c, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
            group_of_comp[c] = signatures.setdefault(pair_block[lo:hi].tobytes(), len(signatures))
        rank_order = np.argsort(group_of_comp, kind="stable")  # components of each group, first element first
        counts = np.bincount(group_of_comp, minlength=len(signatures))
        first = np.zeros(len(signatures) + 1, dtype=np.int64)
        np.cumsum(counts, out=first[1:])
        rank = np.empty(n_comps, dtype=np.int64)
        rank[rank_order] = np.arange(n_comps, dtype=np.int64) - first[group_of_comp[rank_order]]
        # every element as (group, block, channel, index), sorted: each (group, block) run is one block's slots
        g_of, k_of = group_of_comp[comp_of], rank[comp_of]
        order = np.lexsort((local, k_of, block_of, g_of))
        g_sorted, b_sorted = g_of[order], block_of[order]
        cuts = np.flatnonzero((np.diff(g_sorted) != 0) | (np.diff(b_sorted) != 0)) + 1
        run_starts = np.concatenate(([0], cuts)).tolist()
        run_stops = np.concatenate((cuts, [total])).tolist()
        members_of_block: list[list[int]] = [[] for _ in range(n_blocks)]
        for k, block in enumerate(block_of_end.tolist()):
            members_of_block[block].append(k)
        slots: list[dict[End, Slots]] = [{} for _ in signatures]
        for lo, hi in zip(run_starts, run_stops):
            picked = order[lo:hi]
            g = int(g_sorted[lo])
            shared = Slots.of_owners(local[picked], k_of[picked], int(counts[g]))
            for k in members_of_block[int(b_sorted[lo])]:
                slots[g][ends[k]] = shared
        groups = []
        for signature, g in signatures.items():
            numbers = sorted(k for block in np.frombuffer(signature, dtype=np.int64).tolist()
                             for k in members_of_block[block])
            members = tuple(ends[k] for k in numbers)
            blocked = sorted({self.barriers[e] for e in members if e in self.barriers})
            root = next((e for e in members if e.kind == EndKind.OP and e.port.side == Side.OUT), members[0])
            traits = frozenset(m.trait for e in members for m in self.marks.get(e, ()))
            groups.append(Group(0, members, int(counts[g]), {e: slots[g][e] for e in members}, blocked, root,
                                traits))
        groups.sort(key=lambda g: self._end_order(g.root))
        for i, group in enumerate(groups):
            group.id = i
        return groups

    def _inconsistent(self, a: End, b: End) -> InputError:
        """Two coupled ends whose sizes cannot map: the model's parameters do not fit its channels."""
        node = self.graph.node_by_name.get(a.node or b.node)
        where = f"node '{node.name}' ({node.op_type})" if node else f"tensor {a.tensor}"
        return InputError(f"inconsistent model: at {where}, {a.tensor} has {self.size(a)} channels along axes "
                          f"{list(a.axes)} but {b.tensor} has {self.size(b)} along {list(b.axes)}")

    def _end_order(self, end: End):
        return (self._order.get(end.node, -1), end.kind, end.tensor, end.axes, str(end.port))

    # ------------------------------------------------------------------ API
    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def blocked_groups(self) -> list[Group]:
        return [g for g in self.groups if g.blocked]

    def group_of(self, node: str, channel: int | None = None, port: Port = Port(Side.OUT, 0)) -> Group:
        """The group holding ``node``'s channels at ``port`` (and ``channel`` if given)."""
        for group in self.groups:
            for end in group.ends:
                if end.kind == EndKind.OP and end.node == node and end.port == port:
                    if channel is None or channel in group.slots[end].index:
                        return group
        raise KeyError(f"no group holds channel {channel} of {node}.{port}")

    def stored(self, tensor: str) -> Stored | None:
        """How a reader decodes the constant ``tensor``, where one reads it as quantized codes (OpSpec.stored)."""
        for node, slot in self.graph.consumers.get(tensor, []):
            spec = self.spec(node.name)
            if slot < 0 or spec is None or spec.stored is None:
                continue
            found = call_rule("stored", node, spec.stored, self.view(node.name), slot, strict=self.strict)
            if found is not None:
                return found
        return None

    def real_value(self, tensor: str) -> np.ndarray:
        """A constant as its readers compute with it: quantized codes decoded (scored in float32)."""
        stored = self.stored(tensor)
        return stored.real if stored is not None else self.graph.params[tensor]

    def is_quant_param(self, tensor: str) -> bool:
        """Whether the constant only says how another is quantized (a scale, a zero point)."""
        for node, slot in self.graph.consumers.get(tensor, []):
            spec = self.spec(node.name)
            if spec is not None and spec.param_roles.get(slot) == QUANT_PARAM:
                return True
        return False

    def inexact_nodes(self, group: Group) -> list[str]:
        """Nodes in the group whose rule says removal is not the same as zeroing."""
        names = {e.node for e in group.ends if e.kind == EndKind.OP}
        inexact = {n for n in names if (spec := self.spec(n)) is not None and not spec.exact}
        inexact |= {e.node for e in group.ends if any(m.trait == Trait.STATISTICS for m in self.marks.get(e, ()))}
        return sorted(inexact)

    def groups_matching(self, pattern: str) -> list[Group]:
        """Groups whose output-side ends belong to nodes whose name matches ``pattern``."""
        rx = re.compile(pattern)
        return [g for g in self.groups
                if any(e.kind == EndKind.OP and e.port.side == Side.OUT and rx.search(e.node) for e in g.ends)]


def distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique, by sorting: its hash path is slower on large int arrays)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _union_find(parent: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected components of pairs (u, v): each element ends labelled by its minimum."""
    while True:
        pu, pv = parent[u], parent[v]
        low = np.minimum(pu, pv)
        before = parent.copy()
        np.minimum.at(parent, pu, low)
        np.minimum.at(parent, pv, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        if np.array_equal(parent, before):
            return parent
