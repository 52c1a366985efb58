"""Control flow: If, Loop, Scan.

Bodies are pruned inside, each analysed as a graph of its own (onnxprune/bodies.py).
An If is also analysed flattened (``OpSpec.selects_body``): its branches' nodes
beside it, each branch's outputs appended to its inputs; output k is then tied
to output k of every branch, so channels that cross the boundary (an outer
tensor the branches read, the If's outputs) prune when every branch agrees.
Anything else that crosses a body's boundary is a barrier naming the subgraph
and the tensor: Loop's carried values and Scan's inputs and outputs would need
every iteration to agree, which is not analysed.
"""
from __future__ import annotations

from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec, Side

BODIES = {"If": ("then_branch", "else_branch"), "Loop": ("body",), "Scan": ("body",)}


def _crossing(view: NodeView, port, axes):
    node = view.node
    bodies = ", ".join(f"{node.name}.{attr}" for attr in BODIES[node.op_type])
    tensor = view.tensor(port)
    if port.side == Side.OUT:
        return Barrier(f"{tensor} comes out of subgraph {bodies}: channels crossing a subgraph boundary "
                       f"are not pruned")
    return Barrier(f"{tensor} goes into subgraph {bodies}: channels crossing a subgraph boundary are not pruned")


def _if(view: NodeView, port, axes):
    """Flattened (inputs: cond, then each branch's outputs): output k is each branch's output k."""
    n = view.n_outputs
    branches = (view.n_inputs - 1) // n if n else 0
    if branches < 2 or view.n_inputs != 1 + branches * n:  # as the file holds it: the branches are not beside it
        bodies = ", ".join(f"{view.node.name}.{attr}" for attr in BODIES["If"])
        return Barrier(f"{view.tensor(port)} comes out of subgraph {bodies}: left to subgraph pruning, which prunes "
                       f"it where every branch agrees")
    if port == IN(0):
        return Barrier("the condition is not a channel")
    k = port.slot if port.side == Side.OUT else (port.slot - 1) % n
    ports = [OUT(k)] + [IN(1 + b * n + k) for b in range(branches)]
    return [Couple(other, axes) for other in ports if other != port]


def register(registry) -> None:
    registry.register(OpSpec(("If",), _if, foldable=False, selects_body=True, family="control"))
    for op in ("Loop", "Scan"):
        registry.register(OpSpec((op,), _crossing, foldable=False, family="control"))
