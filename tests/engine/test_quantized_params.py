"""Weights that quantized layers read as codes count as parameters, as many as the float weights they
stand for: a QLinearConv's int8 weight one per code, a MatMulNBits' packed int4 blob K x N (it counted
nothing, so an int4 model reported a fraction of its parameters and --target-params saw no weights)."""
from __future__ import annotations

import os

import onnx
from onnx import numpy_helper

from onnxprune import Pruner
from support.exported import MODELS_DIR

REALWORLD = os.path.join(MODELS_DIR, "realworld")


def _floats(model: onnx.ModelProto) -> int:
    return sum(numpy_helper.to_array(t).size for t in model.graph.initializer
               if numpy_helper.to_array(t).dtype.kind == "f")


def test_qlinear_weights_count_one_parameter_per_code():
    model = onnx.load(os.path.join(REALWORLD, "qlinear_conv.onnx"))
    codes = {n.input[3] for n in model.graph.node if n.op_type in ("QLinearConv", "QLinearMatMul")}
    sizes = {t.name: numpy_helper.to_array(t).size for t in model.graph.initializer}
    assert codes and all(sizes[c] > 1 for c in codes)
    assert Pruner.from_model(model).params() == _floats(model) + sum(sizes[c] for c in codes)


def test_packed_int4_weights_count_k_times_n():
    model = onnx.load(os.path.join(REALWORLD, "matmul_nbits.onnx"))
    attrs = [{a.name: a.i for a in n.attribute} for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert attrs and all(a["bits"] == 4 for a in attrs)
    scales = sum(numpy_helper.to_array(t).size for t in model.graph.initializer if t.name.endswith("_scales"))
    assert Pruner.from_model(model).params() == _floats(model) + sum(a["K"] * a["N"] for a in attrs)
    assert _floats(model) == scales + sum(numpy_helper.to_array(t).size for t in model.graph.initializer
                                          if t.name.endswith("_bias") and numpy_helper.to_array(t).dtype.kind == "f")
