"""Model size and cost: parameters and multiply-accumulates (MACs from the rules)."""
from __future__ import annotations

import numpy as np

from .ir import Graph
from .registry import Registry
from .rules import NodeView, call_rule


def count_params(graph: Graph, registry: Registry | None = None) -> int:
    """Elements of weights: floating-point initializers (fp32, fp16, bf16, fp8), and narrow integers
    stored to be converted into a weight (weight-only int8/int4), never shape constants; those of
    subgraphs too. With the ``registry``: also the weights quantized layers read as codes
    (QLinearConv, ConvInteger, MatMulNBits), as many as the float weights they stand for."""
    from .bodies import has_bodies, params_inside  # late: they import the dependency graph
    from .read_weights import storage_only
    inside = params_inside(graph, registry) if has_bodies(graph) else 0
    stored = int(sum(v.size for name, v in graph.params.items()
                     if _floating(v.dtype) or (_narrow_int(v.dtype) and storage_only(graph, name))))
    return inside + stored + (_read_as_codes(graph, registry) if registry is not None else 0)


def _read_as_codes(graph: Graph, registry: Registry) -> int:
    """Weight elements of the narrow-integer constants a layer reads as quantized codes itself
    (``OpSpec.weight_elements``); scales and zero points are not weights."""
    from .read_weights import storage_only
    total = 0
    for name, value in graph.params.items():
        if not _narrow_int(value.dtype) or storage_only(graph, name):
            continue
        for node, slot in graph.consumers.get(name, []):
            spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
            if spec is None or spec.weight_elements is None or slot < 0:
                continue
            elements = call_rule("weight_elements", node, spec.weight_elements, NodeView(node, graph), slot)
            if elements:
                total += int(elements)
                break
    return total


def _floating(dtype: np.dtype) -> bool:
    """numpy's floats and ml_dtypes' (bfloat16, float8_*: numpy kind V), as onnx reads them."""
    return np.issubdtype(dtype, np.floating) or (dtype.kind == "V" and dtype.name.startswith(("bfloat", "float")))


def _narrow_int(dtype: np.dtype) -> bool:
    return (dtype.kind in "iu" and dtype.itemsize == 1) or (dtype.kind == "V" and dtype.name in ("int4", "uint4"))


def count_macs(graph: Graph, registry: Registry) -> int:
    """MACs of every layer, those inside subgraphs too (see bodies.macs_inside)."""
    from .bodies import has_bodies, macs_inside  # late: bodies imports the engine
    inside = macs_inside(graph, registry) if has_bodies(graph) else 0
    return sum(node_macs(graph, registry).values()) + inside


def node_macs(graph: Graph, registry: Registry) -> dict[str, int]:
    """MACs per node, for the nodes whose rule counts any."""
    macs = {}
    for node in graph.nodes:
        spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
        if spec is not None and spec.macs is not None:
            macs[node.name] = int(call_rule("macs", node, spec.macs, NodeView(node, graph)))
    return macs
