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

import numpy as np

from onnxprune.rules import IN, OUT, Barrier, Couple, NodeView, OpSpec, Side
from onnxprune.shapes import is_symbolic

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


def _loop_trips(view: NodeView) -> int | None:
    """Loop's M, where a constant: the most times the body runs (a condition may stop it sooner)."""
    m = view.const(0) if view.has_input(0) else None
    return int(np.asarray(m).reshape(-1)[0]) if m is not None and np.asarray(m).size == 1 else None


def _scan_trips(view: NodeView) -> int | None:
    """Scan (opset 9+) runs its body once per slice of its scan inputs along their scan axis: the first
    scan input's length there, where static (a symbolic length, e.g. a sequence: None)."""
    scans = int(view.attr("num_scan_inputs", 0))
    if view.opset < 9 or scans < 1 or scans > view.n_inputs:
        return None
    shape = view.shape(IN(view.n_inputs - scans))
    if shape is None:
        return None
    axes = view.attr("scan_input_axes")
    axis = int(axes[0]) % len(shape) if axes else 0
    length = shape[axis]
    return None if is_symbolic(length) else int(length)


def register(registry) -> None:
    registry.register(OpSpec(("If",), _if, foldable=False, selects_body=True, family="control"))
    registry.register(OpSpec(("Loop",), _crossing, foldable=False, trips=_loop_trips, family="control"))
    registry.register(OpSpec(("Scan",), _crossing, foldable=False, trips=_scan_trips, family="control"))
