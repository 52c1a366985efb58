"""Attention heads folded into the batch axis, unfolded before analysis (issue 17).

torch's ``nn.MultiheadAttention`` (torchvision's ViT, ``nn.TransformerEncoder``)
computes ``q.view(seq, batch * heads, head_dim).transpose(0, 1)`` and, for
scaled-dot-product attention, views the result back as ``(batch, heads, seq,
head_dim)``; the dynamo exporter's decomposition of that attention folds
``(batch, heads)`` again around each transpose. While folded, a head's
channels sit at run-time positions (``b * heads + h``) of one axis, which no
index mapping can name, so every head was a barrier.

Each Reshape (fold) -> Transpose -> Reshape (unfold) chain is the same as a
Reshape that only splits and a Transpose with the heads kept apart:

* (seq, batch, E) -> (seq, batch*H, D) -> [1, 0, 2] -> (batch, H, seq, D)
  is Reshape to (0, 0, H, D) then Transpose [1, 2, 0, 3];
* (batch, H, ...) -> (batch*H, ...) -> perm keeping axis 0 -> (batch, H, ...)
  is one Transpose with the perm shifted past the heads axis.

The rewrite holds for every batch size: the element counts force the folded
axis to be batch * H, and row-major order puts head h of batch b at b * H + h.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from onnxprune.ir import Graph, Node
from onnxprune.passes import PassResult
from onnxprune.shapes import is_symbolic


class UnfoldHeadsFromBatch:
    name = "unfold attention heads from the batch axis"

    def __init__(self, registry=None):
        self.registry = registry

    def run(self, graph: Graph) -> PassResult:
        rewritten, count = unfold_heads(graph)
        notes = (f"{count} Reshape-Transpose-Reshape chains that fold attention heads into the batch axis "
                 "rewritten as Reshape + Transpose with the heads on an axis of their own",) if count else ()
        return PassResult(self.name, rewritten, count, notes)


def unfold_heads(graph: Graph) -> tuple[Graph, int]:
    replace: dict[str, list[Node]] = {}  # node name -> the nodes that take its place ([] drops it)
    params, count = dict(graph.params), 0
    for fold in graph.nodes:
        found = _chain(graph, fold)
        if found is None:
            continue
        chain, readers = found
        if any(n.name in replace for n in chain + [r for r, _ in readers]):
            continue
        new = _split_heads(graph, chain, readers, params) or (None if readers else _shift_perm(graph, chain))
        if new is None:
            continue
        fold, turn, unfold = chain
        replace[fold.name], replace[turn.name], replace[unfold.name] = new[0], [], new[1]
        replace.update(new[2])
        count += 1
    if not count:
        return graph, 0
    nodes = [m for n in graph.nodes for m in replace.get(n.name, [n])]
    return dataclasses.replace(graph, nodes=nodes, params=params), count


def _chain(graph: Graph, fold: Node):
    """Reshape -> Transpose -> Reshape, each intermediate read by the next node, and otherwise only by
    Shape nodes (TorchScript exports read the folded sizes: ``src_len = k.size(1)``)."""
    if fold.op_type != "Reshape" or fold.domain:
        return None
    turn, readers = _next(graph, fold.outputs[0])
    if turn is None or turn.op_type != "Transpose":
        return None
    unfold, more = _next(graph, turn.outputs[0])
    if unfold is None or unfold.op_type != "Reshape":
        return None
    return [fold, turn, unfold], [(r, fold.outputs[0]) for r in readers] + [(r, turn.outputs[0]) for r in more]


def _next(graph: Graph, tensor: str):
    """The one node that reads ``tensor`` as data, and the whole-shape Shape nodes that read it too."""
    if tensor in graph.graph_output_names:
        return None, []
    readers = graph.consumers.get(tensor, [])
    shapes = [n for n, slot in readers if n.op_type == "Shape" and not n.domain and slot == 0
              and "start" not in n.attrs and "end" not in n.attrs]
    others = [(n, slot) for n, slot in readers if n not in shapes]
    if len(others) != 1 or others[0][1] != 0:
        return None, []
    return others[0][0], shapes


def _static(d) -> bool:
    return isinstance(d, int) and not is_symbolic(d) and d > 0


def _shapes(graph: Graph, *names):
    shapes = [graph.shape(n) for n in names]
    return None if any(s is None for s in shapes) else shapes


def _perm(node: Node, rank: int) -> list[int]:
    return [int(p) for p in node.attrs.get("perm", list(reversed(range(rank))))]


def _split_heads(graph: Graph, chain, readers, params):
    """(seq, batch, E) -> (seq, batch*H, D) -> [1, 0, 2] -> (batch, H, seq, D)."""
    fold, turn, unfold = chain
    shapes = _shapes(graph, fold.inputs[0], fold.outputs[0], unfold.outputs[0])
    if shapes is None:
        return None
    x, y, z = shapes
    if len(x) != 3 or len(y) != 3 or len(z) != 4 or _perm(turn, 3) != [1, 0, 2]:
        return None
    seq, width, head_dim = x[0], x[2], y[2]
    if not (_static(width) and _static(head_dim) and width % head_dim == 0 and is_symbolic(y[1])):
        return None
    heads = width // head_dim
    if heads < 2 or y[0] != seq or list(z[1:]) != [heads, seq, head_dim]:
        return None
    target = _const(graph, params, f"{fold.name}_heads_apart", [0, 0, heads, head_dim])  # 0: copy seq, batch
    split = f"{fold.outputs[0]}_heads_apart"
    nodes = ([Node(fold.name, "Reshape", "", [fold.inputs[0], target], [split], doc=fold.doc)],
             [Node(unfold.name, "Transpose", "", [split], [unfold.outputs[0]], attrs={"perm": [1, 2, 0, 3]},
                   doc=unfold.doc)], {})
    for reader, tensor in readers:  # its shape from x's: (seq, batch*H, D), or (batch*H, seq, D) after the turn
        order = [0, 1, 2] if tensor == fold.outputs[0] else [1, 0, 2]
        grow = [1, 1, 1]
        grow[order.index(1)] = heads
        name, out = reader.name, reader.outputs[0]
        nodes[2][name] = [
            Node(f"{name}_of_input", "Shape", "", [fold.inputs[0]], [f"{out}_of_input"]),
            Node(f"{name}_order", "Gather", "", [f"{out}_of_input", _const(graph, params, f"{name}_order", order)],
                 [f"{out}_order"], attrs={"axis": 0}),
            Node(f"{name}_heads", "Mul", "", [f"{out}_order", _const(graph, params, f"{name}_heads", grow)],
                 [f"{out}_heads"]),
            Node(name, "Div", "", [f"{out}_heads", _const(graph, params, f"{name}_head_dim", [1, 1, heads])],
                 [out])]
    return nodes


def _const(graph: Graph, params, name: str, values) -> str:
    while name in params or name in graph.values or name in graph.producers:
        name += "_"
    params[name] = np.asarray(values, dtype=np.int64)
    return name


def _shift_perm(graph: Graph, chain):
    """(batch, H, ...) -> (batch*H, ...) -> perm keeping axis 0 -> (batch, H, ...)."""
    fold, turn, unfold = chain
    shapes = _shapes(graph, fold.inputs[0], fold.outputs[0], turn.outputs[0], unfold.outputs[0])
    if shapes is None:
        return None
    x, y, t, z = shapes
    rank = len(x)
    if rank < 3 or len(y) != rank - 1 or len(z) != rank:
        return None
    perm = _perm(turn, rank - 1)
    heads = x[1]
    if perm[0] != 0 or not _static(heads) or heads < 2 or not is_symbolic(y[0]):
        return None
    if list(y[1:]) != list(x[2:]) or z[1] != heads or list(z[2:]) != list(t[1:]):
        return None
    return ([], [Node(unfold.name, "Transpose", "", [fold.inputs[0]], [unfold.outputs[0]],
                      attrs={"perm": [0, 1] + [p + 1 for p in perm[1:]]}, doc=unfold.doc)], {})


def register(registry) -> None:
    registry.register_pass(UnfoldHeadsFromBatch)
