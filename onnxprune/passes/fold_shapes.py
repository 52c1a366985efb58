"""Fold shape arithmetic into constants when the model's shapes are fully static.

Exporters compute split points and reshape targets at run time
(``Shape -> Gather -> Div -> Slice``); with static shapes these are constants,
and only as constants can rules read them and rewrite them for the pruned
channel counts. Folding uses onnx's reference evaluator, one node at a time,
and only for small integer results (never weights).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from ..ir import Graph
from ..onnx_out import node_proto
from ..registry import Registry
from ..rules import NodeView
from . import PassResult

MAX_FOLDED_ELEMENTS = 1 << 16
# Evaluations with inputs at most this large are remembered within one folding: exporters repeat the same
# shape arithmetic in every block (a Swin-T: 2,172 evaluations, most of them repeats).
MAX_REMEMBERED_ELEMENTS = 256


def is_static(graph: Graph) -> bool:
    return all(v.static_shape is not None for v in graph.inputs)


class FoldShapeArithmetic:
    """The pass form of :func:`fold_shape_arithmetic`."""

    name = "fold shape arithmetic"

    def __init__(self, registry: Registry):
        self.registry = registry

    def run(self, graph: Graph) -> PassResult:
        folded, count = fold_shape_arithmetic(graph, self.registry)
        return PassResult(self.name, folded, count)


def fold_shape_arithmetic(graph: Graph, registry: Registry) -> tuple[Graph, int]:
    """Return (graph with foldable nodes replaced by constants, number of nodes folded)."""
    if not is_static(graph):
        return graph, 0
    params = dict(graph.params)
    keep, folded, seen = [], 0, {}
    outputs = graph.graph_output_names
    for node in graph.nodes:
        values = _try_fold(node, graph, params, registry, seen)
        if values is None or any(name in outputs for name in node.outputs):
            keep.append(node)
            continue
        params.update(values)
        folded += 1
    if not folded:
        return graph, 0
    return dataclasses.replace(graph, nodes=keep, params=params), folded


def _try_fold(node, graph: Graph, params, registry: Registry, seen: dict | None = None):
    opset = graph.meta.opsets.get(node.domain, graph.opset)
    spec = registry.lookup(node.domain, node.op_type, opset)
    if spec is not None and spec.fold is not None:
        view = NodeView(node, dataclasses.replace(graph, params=params))
        result = spec.fold(view)
        return None if result is None else {node.outputs[0]: result}
    if node.domain or node.implicit_inputs or not node.inputs:
        return None
    if spec is not None and not spec.foldable:
        return None
    inputs = [params.get(name) if name else None for name in node.inputs]
    if any(name and value is None for name, value in zip(node.inputs, inputs)):
        return None
    if any(v is not None and v.dtype.kind == "f" for v in inputs):
        return None  # weights stay weights
    try:
        results = evaluate_node(node, inputs, opset, seen)
    except Exception:
        return None
    if any(r.dtype.kind == "f" or r.size > MAX_FOLDED_ELEMENTS for r in results):
        return None
    return dict(zip(node.outputs, results))


def evaluate_node(node, inputs, opset: int, seen: dict | None = None) -> list[np.ndarray]:
    """The node's outputs on ``inputs`` (onnx's reference evaluator); ``seen``: evaluations of small
    inputs already made, by operator, attributes and input values (filled here)."""
    proto = node_proto(node)
    key = _evaluation_key(proto, inputs, opset) if seen is not None else None
    if key is not None and key in seen:
        return [r.copy() for r in seen[key]]
    results = _evaluate_proto(node, proto, inputs, opset)
    if key is not None:
        seen[key] = [r.copy() for r in results]
    return results


def _evaluation_key(proto: onnx.NodeProto, inputs, opset: int):
    """What an evaluation's result depends on (names aside), or None where an input is too large to remember."""
    if any(v is not None and np.asarray(v).size > MAX_REMEMBERED_ELEMENTS for v in inputs):
        return None
    values = tuple(None if v is None else (np.asarray(v).dtype.str, np.shape(v), np.asarray(v).tobytes())
                   for v in inputs)
    return (proto.domain, proto.op_type, opset, len(proto.output), tuple(a.SerializeToString() for a in proto.attribute),
            tuple(bool(name) for name in proto.input), values)


def _evaluate_proto(node, proto: onnx.NodeProto, inputs, opset: int) -> list[np.ndarray]:
    names = [name for name in node.inputs if name]
    graph = helper.make_graph(
        [proto], "fold",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in zip(node.inputs, inputs) if n],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.outputs if o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {n: v for n, v in zip(node.inputs, inputs) if n}
    try:
        evaluator = ReferenceEvaluator(model)
    except RuntimeError:  # no reference kernel at this opset (DequantizeLinear-10..18): onnxruntime's
        return _evaluate_in_onnxruntime(model, {n: feeds[n] for n in names})
    return [np.asarray(r) for r in evaluator.run(None, {n: feeds[n] for n in names})]


def _evaluate_in_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort  # late: only for the few ops onnx's reference lacks at old opsets

    for output in model.graph.output:
        output.ClearField("type")  # onnxruntime types outputs itself
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [np.asarray(r) for r in session.run(None, feeds)]
