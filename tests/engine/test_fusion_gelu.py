"""Fusion leaves GELU's constants alone: onnxruntime fuses the whole x * 0.5 * (1 + erf(x / sqrt 2))
pattern into one Gelu kernel, and folding its 0.5 into the next layer took the pattern apart (on the
PP-OCR recogniser, 11 Gelu kernels became 44 element-wise ops). The BatchNorm before it still folds."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from support.fusion import assert_exact, fuse, ops


def gelu_model(half_first: bool, approximate: bool = False) -> onnx.ModelProto:
    """Conv -> BatchNorm -> GELU (as torch / paddle export it) -> 1x1 Conv."""
    rng = np.random.default_rng(0)
    consts = {"w1": rng.standard_normal((8, 4, 1, 1)).astype(np.float32) * 0.5,
              "w2": rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.5,
              "gamma": rng.uniform(0.5, 1.5, 8).astype(np.float32), "beta": rng.standard_normal(8).astype(np.float32),
              "mean": rng.standard_normal(8).astype(np.float32) * 0.1, "var": rng.uniform(0.5, 1.5, 8).astype(np.float32),
              "sqrt2": np.array(math.sqrt(2.0), np.float32), "one": np.array(1.0, np.float32),
              "half": np.array(0.5, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], "conv1"),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["h"], "bn")]
    if approximate:  # x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))
        consts.update(three=np.array(3.0, np.float32), k=np.array(0.044715, np.float32),
                      s=np.array(math.sqrt(2 / math.pi), np.float32))
        nodes += [helper.make_node("Pow", ["h", "three"], ["cube"], "pow"),
                  helper.make_node("Mul", ["cube", "k"], ["kc"], "mul_k"),
                  helper.make_node("Add", ["h", "kc"], ["inner"], "add_inner"),
                  helper.make_node("Mul", ["inner", "s"], ["scaled"], "mul_s"),
                  helper.make_node("Tanh", ["scaled"], ["core"], "tanh")]
    else:
        nodes += [helper.make_node("Div", ["h", "sqrt2"], ["scaled"], "div"),
                  helper.make_node("Erf", ["scaled"], ["core"], "erf")]
    nodes.append(helper.make_node("Add", ["core", "one"], ["plus"], "add_one"))
    if half_first:
        nodes += [helper.make_node("Mul", ["h", "half"], ["hh"], "mul_half"),
                  helper.make_node("Mul", ["hh", "plus"], ["g"], "mul_plus")]
    else:
        nodes += [helper.make_node("Mul", ["h", "plus"], ["hp"], "mul_plus"),
                  helper.make_node("Mul", ["hp", "half"], ["g"], "mul_half")]
    nodes.append(helper.make_node("Conv", ["g", "w2"], ["y"], "conv2"))
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def runtime_ops(model: onnx.ModelProto, tmp_path) -> list[str]:
    """The op types onnxruntime runs after its own (basic + extended) graph fusions."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return ops(onnx.load(options.optimized_model_filepath))


@pytest.mark.parametrize("half_first", [False, True])
def test_gelu_constants_stay_and_the_runtime_still_fuses_gelu(half_first, tmp_path):
    model = gelu_model(half_first)
    assert "Gelu" in runtime_ops(model, tmp_path)  # the runtime fuses the pattern of the original
    fused, result = fuse(model)
    assert_exact(model, fused)
    assert "BatchNormalization" not in ops(fused)  # folded into conv1, as before
    assert ops(fused).count("Mul") == 2 and "Erf" in ops(fused)  # the pattern whole, 0.5 included
    assert "Gelu" in runtime_ops(fused, tmp_path) and "Erf" not in runtime_ops(fused, tmp_path)


def test_tanh_gelu_constants_stay(tmp_path):
    model = gelu_model(half_first=False, approximate=True)
    fused, _ = fuse(model)
    assert_exact(model, fused)
    assert "BatchNormalization" not in ops(fused)
    assert ops(fused).count("Mul") == 4 and ops(fused).count("Add") == 2  # 0.5, sqrt(2/pi), 0.044715 kept
