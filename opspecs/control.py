"""Control flow: If, Loop, Scan.

Their bodies are pruned inside, each as a graph of its own (onnxprune/bodies.py).
What crosses a body's boundary (the node's inputs and outputs, which the bodies
read and produce) is a barrier that names the subgraph and the tensor: pruning
it would need every branch (and every loop iteration) to agree, which is not
analysed yet.
"""
from __future__ import annotations

from onnxprune.rules import Barrier, NodeView, OpSpec, Side

BODIES = {"If": ("then_branch", "else_branch"), "Loop": ("body",), "Scan": ("body",)}


def _crossing(view: NodeView, port, axes):
    node = view.node
    bodies = ", ".join(f"{node.name}.{attr}" for attr in BODIES[node.op_type])
    tensor = view.tensor(port)
    if port.side == Side.OUT:
        return Barrier(f"{tensor} comes out of subgraph {bodies}: channels crossing a subgraph boundary "
                       f"are not pruned")
    return Barrier(f"{tensor} goes into subgraph {bodies}: channels crossing a subgraph boundary are not pruned")


def register(registry) -> None:
    for op in BODIES:
        registry.register(OpSpec((op,), _crossing, foldable=False, family="control"))
