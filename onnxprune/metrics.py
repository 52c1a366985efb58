"""Model size and cost: parameters and multiply-accumulates (MACs from the rules)."""
from __future__ import annotations

import numpy as np

from .ir import Graph
from .registry import Registry
from .rules import NodeView, call_rule


def count_params(graph: Graph) -> int:
    """Elements of floating-point initializers (weights, not shape constants)."""
    return int(sum(v.size for v in graph.params.values() if np.issubdtype(v.dtype, np.floating)))


def count_macs(graph: Graph, registry: Registry) -> int:
    return sum(node_macs(graph, registry).values())


def node_macs(graph: Graph, registry: Registry) -> dict[str, int]:
    """MACs per node, for the nodes whose rule counts any."""
    macs = {}
    for node in graph.nodes:
        spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
        if spec is not None and spec.macs is not None:
            macs[node.name] = int(call_rule("macs", node, spec.macs, NodeView(node, graph)))
    return macs
