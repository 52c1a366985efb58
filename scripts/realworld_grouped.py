"""Grouped linear layers as Einsum behind a Reshape that splits the channels into groups, for
``scripts/build_realworld_models.py`` (a speech-enhancement encoder's layout).

``grouped_einsum``: x [batch, time, 16] -> linear 16 -> view (batch, time, 4 groups, 4) -> Einsum
``btgc,gcd->btgd`` (weight [4, 4, 6] from a Constant node) -> view (batch, time, 24) -> Relu -> view
(batch, time, 4, 6) -> Einsum ``btgc,gcd->btgd`` (weight [4, 6, 4]) -> view (batch, time, 16) -> residual
add -> linear 8. The views' targets are constants with 0 (copy) and -1 (infer), as exporters write them.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 17
WIDTH, GROUPS, HIDDEN, OUT = 16, 4, 6, 8


def grouped_einsum() -> onnx.ModelProto:
    rng = np.random.default_rng(SEED)
    inits, nodes = [], []

    def param(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name, shape):
        return param(name, (rng.standard_normal(shape) * np.sqrt(2.0 / shape[-2])).astype(np.float32))

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    per_group = WIDTH // GROUPS
    h = node("MatMul", ["x", weight("w_in", [WIDTH, WIDTH])], "in_proj")
    h = node("Add", [h, param("b_in", (0.1 * rng.standard_normal(WIDTH)).astype(np.float32))], "in_bias")
    g = node("Reshape", [h, param("to_groups", np.array([0, 0, GROUPS, per_group], np.int64))], "to_groups_1")
    w1 = (rng.standard_normal((GROUPS, per_group, HIDDEN)) * np.sqrt(2.0 / per_group)).astype(np.float32)
    nodes.append(helper.make_node("Constant", [], ["w_grouped_1"], name="w_grouped_1",
                                  value=numpy_helper.from_array(w1)))  # weights as Constant nodes, as exported
    g = node("Einsum", [g, "w_grouped_1"], "grouped_1", equation="btgc,gcd->btgd")
    y = node("Reshape", [g, param("merge_1", np.array([0, 0, -1], np.int64))], "merged_1")
    y = node("Relu", [y], "act")
    g = node("Reshape", [y, param("to_groups_2", np.array([0, 0, GROUPS, HIDDEN], np.int64))], "to_groups_2_1")
    g = node("Einsum", [g, weight("w_grouped_2", [GROUPS, HIDDEN, per_group])], "grouped_2",
             equation="btgc,gcd->btgd")
    y = node("Reshape", [g, param("merge_2", np.array([0, 0, WIDTH], np.int64))], "merged_2")
    y = node("Add", [h, y], "residual")
    node("MatMul", [y, weight("w_out", [WIDTH, OUT])], "out")
    graph = helper.make_graph(nodes, "grouped_einsum",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", WIDTH])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "time", OUT])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="build_realworld_models")
    model.ir_version = 8
    return model


GROUPED = {
    "grouped_einsum": (grouped_einsum, "grouped linear layers as Einsum btgc,gcd->btgd behind views that split 16 "
                                       "channels into 4 groups (a Constant-node weight), Relu, a second grouped "
                                       "layer, residual, linear 8; x [batch, time, 16]"),
}
