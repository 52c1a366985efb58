#!/usr/bin/env python
"""Build the small "as users bring them" models of issue 17 into ``tests/models/realworld/``.

No torch: each model is written with onnx.helper from seeded numpy weights, in
the shapes real pipelines produce and that the pruner once failed on:

* ``zoo_ir3``: ONNX model-zoo style, IR version 3 with every initializer also
  listed as a graph input (caffe2-converted names ``conv1_w_0``), opset 9;
* ``zoo_opset7`` / ``zoo_opset8``: the same network at opsets 7 and 8
  (BatchNormalization v7, Gemm v7, MaxPool v8), which onnx's version converter upgrades;
* ``scan_opset8``: an opset-8 Scan with sequence_lens, which the converter cannot upgrade;
* ``zoo_constant_weights``: AlexNet/ZFNet zoo style, weights built at run time from
  constants by ConstantOfShape, Expand and Tile;
* ``reflect_pad`` / ``reflect_pad_wide``: dynamic dims that the default stand-in sizes break;
* ``scalar_gain``: a scalar (rank 0) input;
* ``gcn_matmul``: a GCN written as MatMuls, adjacency x features x weight, over a dynamic node count;
* quantized graphs (QDQ, ConvInteger + DynamicQuantizeLinear, QLinearConv, int4 MatMulNBits,
  DynamicQuantizeLSTM): see ``scripts/realworld_quantized.py``;
* ``swin_windows`` / ``swin_windows_affine``: torchvision Swin's shifted-window block as its TorchScript
  export lays it out: see ``scripts/realworld_windows.py``;
* ``grouped_einsum``: grouped linear layers as Einsum behind channel-splitting views: see
  ``scripts/realworld_grouped.py``.

    python scripts/build_realworld_models.py [--out-dir tests/models/realworld]

Every model passes onnx.checker and runs in onnxruntime before it is written.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from realworld_quantized import QUANTIZED  # this script's folder is on sys.path when it runs
from realworld_grouped import GROUPED
from realworld_windows import WINDOWS

SEED = 17
OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "tests", "models", "realworld")
IMAGE = [1, 3, 16, 16]


class Net:
    """Collects nodes and seeded initializers (conv: He-scaled, BN: spread statistics)."""

    def __init__(self, seed: int = SEED):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def param(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, shape, scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = scale if scale is not None else np.sqrt(2.0 / fan_in)
        return self.param(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, inputs, outputs, **attrs) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=outputs[0], **attrs))
        return outputs[0]

    def conv(self, x: str, name: str, cin: int, cout: int, k: int = 3, weight: str | None = None) -> str:
        w = weight or self.weight(f"{name}_w_0", [cout, cin, k, k])
        b = self.param(f"{name}_b_0", (0.1 * self.rng.standard_normal(cout)).astype(np.float32))
        return self.node("Conv", [x, w, b], [f"{name}_1"], kernel_shape=[k, k], pads=[k // 2] * 4)

    def bn(self, x: str, name: str, c: int, opset: int) -> str:
        r = self.rng
        ins = [x] + [self.param(f"{name}_{p}_0", v.astype(np.float32)) for p, v in (
            ("scale", 1 + 0.3 * r.standard_normal(c)), ("bias", 0.1 * r.standard_normal(c)),
            ("mean", 0.1 * r.standard_normal(c)), ("var", 0.5 + r.random(c)))]
        attrs = {"epsilon": 1e-5}
        if opset < 9:
            attrs["spatial"] = 1
        return self.node("BatchNormalization", ins, [f"{name}_1"], **attrs)

    def model(self, inputs, outputs, opset: int, ir_version: int, inits_as_inputs: bool) -> onnx.ModelProto:
        declared = list(inputs)
        if inits_as_inputs:  # IR < 4: every initializer is also a graph input
            declared += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.inits]
        graph = helper.make_graph(self.nodes, "main", declared, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="build_realworld_models")
        model.ir_version = ir_version
        return model


def zoo_net(opset: int, constant_weights: bool = False) -> onnx.ModelProto:
    """conv-relu, conv-BN-relu with a residual add, maxpool, 1x1 conv, flatten, fc, softmax."""
    n = Net()
    x = "data_0"
    if constant_weights:  # weights built from constants at run time, as in the zoo's AlexNet / ZFNet
        small = n.weight("conv1_w_half", [8, 3, 3, 3], np.sqrt(2 / 27))
        reps = n.param("conv1_w_reps", np.array([2, 1, 1, 1], np.int64))
        w1 = n.node("Tile", [small, reps], ["conv1_w_0"])
        h = n.conv(x, "conv1", 3, 16, weight=w1)
    else:
        h = n.conv(x, "conv1", 3, 16)
    h = n.node("Relu", [h], ["relu1_1"])
    if constant_weights:
        col = n.weight("conv2_w_col", [16, 16, 3, 1], np.sqrt(2 / 144))
        shape = n.param("conv2_w_shape", np.array([16, 16, 3, 3], np.int64))
        w2 = n.node("Expand", [col, shape], ["conv2_w_0"])
        h2 = n.conv(h, "conv2", 16, 16, weight=w2)
    else:
        h2 = n.conv(h, "conv2", 16, 16)
    h2 = n.bn(h2, "bn2", 16, opset)
    h2 = n.node("Relu", [h2], ["relu2_1"])
    h = n.node("Add", [h, h2], ["res2_1"])
    h = n.node("MaxPool", [h], ["pool2_1"], kernel_shape=[2, 2], strides=[2, 2])
    if constant_weights:
        w3 = n.weight("conv3_w_0", [24, 16, 1, 1])
        bias_shape = n.param("conv3_b_shape", np.array([24], np.int64))
        value = numpy_helper.from_array(np.array([0.05], np.float32), "value")
        b3 = n.node("ConstantOfShape", [bias_shape], ["conv3_b_0"], value=value)
        h = n.node("Conv", [h, w3, b3], ["conv3_1"], kernel_shape=[1, 1])
    else:
        h = n.conv(h, "conv3", 16, 24, k=1)
    h = n.node("Relu", [h], ["relu3_1"])
    h = n.node("GlobalAveragePool", [h], ["gap_1"])
    h = n.node("Flatten", [h], ["flat_1"], axis=1)
    if constant_weights:
        col = n.weight("fc_w_col", [10, 1], 0.5)
        shape = n.param("fc_w_shape", np.array([10, 24], np.int64))
        fw = n.node("Expand", [col, shape], ["fc_w_0"])
    else:
        fw = n.weight("fc_w_0", [10, 24])
    fb = n.param("fc_b_0", (0.1 * n.rng.standard_normal(10)).astype(np.float32))
    h = n.node("Gemm", [h, fw, fb], ["fc_1"], transB=1)
    n.node("Softmax", [h], ["softmaxout_1"])
    return n.model([helper.make_tensor_value_info("data_0", TensorProto.FLOAT, IMAGE)],
                   [helper.make_tensor_value_info("softmaxout_1", TensorProto.FLOAT, [1, 10])],
                   opset, ir_version=3, inits_as_inputs=True)


def scan_opset8() -> onnx.ModelProto:
    """A running sum by Scan v8 with its sequence_lens input, which onnx's 8 -> 9 adapter refuses."""
    n = Net()
    f = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
    body = helper.make_graph([helper.make_node("Add", ["s", "e"], ["s2"]), helper.make_node("Identity", ["s2"], ["o"])],
                             "body", [f("s", [4]), f("e", [4])], [f("s2", [4]), f("o", [4])])
    n.nodes.append(helper.make_node("Scan", ["lens", "s0", "xs"], ["total", "sums"], name="scan", body=body,
                                    num_scan_inputs=1))
    inputs = [helper.make_tensor_value_info("lens", TensorProto.INT64, [1]), f("s0", [1, 4]), f("xs", [1, 3, 4])]
    return n.model(inputs, [f("total", [1, 4]), f("sums", [1, 3, 4])], 8, ir_version=3, inits_as_inputs=True)


def reflect_pad(pad: int) -> onnx.ModelProto:
    """Audio-style front end over a dynamic number of samples: a reflect Pad of ``pad`` samples each side
    (reflect needs more samples than that), conv, relu, 1x1 conv."""
    n = Net()
    pads = n.param("pads", np.array([0, 0, pad, 0, 0, pad], np.int64))
    h = n.node("Pad", ["audio", pads], ["padded"], mode="reflect")
    h = n.node("Conv", [h, n.weight("w1", [8, 1, 3]), n.param("b1", np.zeros(8, np.float32))], ["c1"],
               kernel_shape=[3])
    h = n.node("Relu", [h], ["r1"])
    n.node("Conv", [h, n.weight("w2", [4, 8, 1]), n.param("b2", np.zeros(4, np.float32))], ["features"],
           kernel_shape=[1])
    f = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    return n.model([f("audio", ["batch", 1, "samples"])], [f("features", ["batch", 4, "frames"])], 18,
                   ir_version=8, inits_as_inputs=False)


def scalar_gain() -> onnx.ModelProto:
    """conv -> multiply by a scalar input (rank 0) -> relu -> 1x1 conv, over a dynamic time axis."""
    n = Net()
    h = n.node("Conv", ["x", n.weight("w1", [8, 2, 3]), n.param("b1", np.zeros(8, np.float32))], ["c1"],
               kernel_shape=[3], pads=[1, 1])
    h = n.node("Mul", [h, "gain"], ["scaled"])
    h = n.node("Relu", [h], ["r1"])
    n.node("Conv", [h, n.weight("w2", [4, 8, 1]), n.param("b2", np.zeros(4, np.float32))], ["y"], kernel_shape=[1])
    f = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    return n.model([f("x", ["batch", 2, "time"]), f("gain", [])], [f("y", ["batch", 4, "time"])], 18,
                   ir_version=8, inits_as_inputs=False)


def gcn_matmul() -> onnx.ModelProto:
    """Two GCN layers H' = relu(A @ H @ W + b) as plain MatMuls, a mean readout and a classifier."""
    n = Net()
    h = "x"
    widths = [(8, 16), (16, 12)]
    for k, (fin, fout) in enumerate(widths, 1):
        ah = n.node("MatMul", ["adj", h], [f"ax{k}"])
        w = n.weight(f"w{k}", [fin, fout], np.sqrt(2 / fin))
        b = n.param(f"b{k}", (0.1 * n.rng.standard_normal(fout)).astype(np.float32))
        h = n.node("MatMul", [ah, w], [f"axw{k}"])
        h = n.node("Add", [h, b], [f"pre{k}"])
        h = n.node("Relu", [h], [f"h{k}"])
    axes = n.param("readout_axes", np.array([0], np.int64))
    pooled = n.node("ReduceMean", [h, axes], ["pooled"], keepdims=1)
    w = n.weight("w_out", [12, 3], np.sqrt(2 / 12))
    n.node("MatMul", [pooled, w], ["logits"])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["nodes", 8]),
              helper.make_tensor_value_info("adj", TensorProto.FLOAT, ["nodes", "nodes"])]
    return n.model(inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
                   18, ir_version=8, inits_as_inputs=False)


# ---- control flow (If, Loop) -------------------------------------------------------------------------------
def _conv_node(name, x, w, b, out, k=3):
    return helper.make_node("Conv", [x, w, b], [out], name=name, kernel_shape=[k, k], pads=[k // 2] * 4)


def _constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(value, name))


def if_convs() -> onnx.ModelProto:
    """conv-relu, then an If on the input's mean: each branch holds two convs (the then branch's weights as
    Constant nodes, the else branch's as its own initializers) reading the outer activation; after the If,
    conv-relu-conv. Channels inside a branch, across the boundary, and outside it."""
    n = Net()
    f = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    h = n.conv("x", "c1", 3, 16)
    h = n.node("Relu", [h], ["r1"])
    mean = n.node("ReduceMean", ["x"], ["mean"], keepdims=0)
    n.node("Greater", [mean, n.param("zero", np.array(0, np.float32))], ["positive"])
    r = n.rng
    w = lambda shape: (r.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(np.float32)  # noqa: E731
    b = lambda c: (0.1 * r.standard_normal(c)).astype(np.float32)  # noqa: E731
    then = helper.make_graph(
        [_constant("t1_w", w([12, 16, 3, 3])), _constant("t1_b", b(12)), _conv_node("t1", "r1", "t1_w", "t1_b", "t1_y"),
         helper.make_node("Relu", ["t1_y"], ["t1_r"], name="t1_relu"),
         _constant("t2_w", w([8, 12, 1, 1])), _constant("t2_b", b(8)),
         _conv_node("t2", "t1_r", "t2_w", "t2_b", "then_y", k=1)],
        "then_branch", [], [f("then_y", [1, 8, 16, 16])])
    else_ = helper.make_graph(
        [_conv_node("e1", "r1", "e1_w", "e1_b", "e1_y"), helper.make_node("Relu", ["e1_y"], ["e1_r"], name="e1_relu"),
         _conv_node("e2", "e1_r", "e2_w", "e2_b", "else_y")],
        "else_branch", [], [f("else_y", [1, 8, 16, 16])],
        [numpy_helper.from_array(v, k) for k, v in (("e1_w", w([10, 16, 3, 3])), ("e1_b", b(10)),
                                                   ("e2_w", w([8, 10, 3, 3])), ("e2_b", b(8)))])
    n.nodes.append(helper.make_node("If", ["positive"], ["branch_y"], name="if", then_branch=then, else_branch=else_))
    h = n.conv("branch_y", "c3", 8, 16)
    h = n.node("Relu", [h], ["r3"])
    n.conv(h, "c4", 16, 4, k=1)
    return n.model([f("x", IMAGE)], [f("c4_1", [1, 4, 16, 16])], 18, ir_version=8, inits_as_inputs=False)


def loop_constant_weights() -> onnx.ModelProto:
    """conv, then a Loop of 3 residual steps whose body convs take their weights from Constant nodes
    (h <- h + conv(relu(conv(h)))), then conv-relu-conv."""
    n = Net()
    f = lambda name, shape, t=TensorProto.FLOAT: helper.make_tensor_value_info(name, t, shape)  # noqa: E731
    h0 = n.conv("x", "c1", 3, 8)
    r = n.rng
    w = lambda shape: (r.standard_normal(shape) * np.sqrt(1 / np.prod(shape[1:]))).astype(np.float32)  # noqa: E731
    b = lambda c: (0.1 * r.standard_normal(c)).astype(np.float32)  # noqa: E731
    body = helper.make_graph(
        [_constant("b1_w", w([16, 8, 3, 3])), _constant("b1_b", b(16)), _conv_node("b1", "h", "b1_w", "b1_b", "b1_y"),
         helper.make_node("Relu", ["b1_y"], ["b1_r"], name="b1_relu"),
         _constant("b2_w", w([8, 16, 3, 3])), _constant("b2_b", b(8)), _conv_node("b2", "b1_r", "b2_w", "b2_b", "b2_y"),
         helper.make_node("Add", ["h", "b2_y"], ["h_next"], name="residual"),
         helper.make_node("Identity", ["cond"], ["cond_out"], name="keep_going")],
        "body", [f("i", [], TensorProto.INT64), f("cond", [], TensorProto.BOOL), f("h", [1, 8, 16, 16])],
        [f("cond_out", [], TensorProto.BOOL), f("h_next", [1, 8, 16, 16])])
    trips = n.param("trips", np.array(3, np.int64))
    go = n.param("go", np.array(True))
    n.nodes.append(helper.make_node("Loop", [trips, go, h0], ["h_final"], name="loop", body=body))
    h = n.conv("h_final", "c2", 8, 16)
    h = n.node("Relu", [h], ["r2"])
    n.conv(h, "c3", 16, 4, k=1)
    return n.model([f("x", IMAGE)], [f("c3_1", [1, 4, 16, 16])], 18, ir_version=8, inits_as_inputs=False)


def scan_convs() -> onnx.ModelProto:
    """conv-relu over a sequence of 4 frames, then a Scan over the frames whose body runs two convs
    (its own initializers) on each frame and adds the result to a carried state; after the Scan,
    conv-relu-conv on the final state. The body's conv-to-conv width prunes inside it; the frames'
    channels cross into the body (a barrier)."""
    n = Net()
    f = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    h = n.conv("x", "c1", 3, 8)
    h = n.node("Relu", [h], ["r1"])
    frames = n.node("Unsqueeze", [h, n.param("axis1", np.array([1], np.int64))], ["frames"])
    r = n.rng
    w = lambda shape: (r.standard_normal(shape) * np.sqrt(1 / np.prod(shape[1:]))).astype(np.float32)  # noqa: E731
    b = lambda c: (0.1 * r.standard_normal(c)).astype(np.float32)  # noqa: E731
    body = helper.make_graph(
        [_conv_node("b1", "frame", "b1_w", "b1_b", "b1_y"), helper.make_node("Relu", ["b1_y"], ["b1_r"], name="b1_relu"),
         _conv_node("b2", "b1_r", "b2_w", "b2_b", "b2_y"),
         helper.make_node("Add", ["state", "b2_y"], ["state_next"], name="accumulate"),
         helper.make_node("Identity", ["b2_y"], ["frame_y"], name="per_frame")],
        "body", [f("state", [1, 8, 16, 16]), f("frame", [1, 8, 16, 16])],
        [f("state_next", [1, 8, 16, 16]), f("frame_y", [1, 8, 16, 16])],
        [numpy_helper.from_array(v, k) for k, v in (("b1_w", w([16, 8, 3, 3])), ("b1_b", b(16)),
                                                   ("b2_w", w([8, 16, 3, 3])), ("b2_b", b(8)))])
    state0 = n.param("state0", np.zeros([1, 8, 16, 16], np.float32))
    n.nodes.append(helper.make_node("Scan", [state0, frames], ["state_final", "frames_y"], name="scan", body=body,
                                    num_scan_inputs=1))
    h = n.conv("state_final", "c2", 8, 16)
    h = n.node("Relu", [h], ["r2"])
    n.conv(h, "c3", 16, 4, k=1)
    return n.model([f("x", [4, 3, 16, 16])], [f("c3_1", [1, 4, 16, 16]), f("frames_y", [4, 1, 8, 16, 16])], 18,
                   ir_version=8, inits_as_inputs=False)


# ---- half precision and weight-only int8 ----------------------------------------------------------------
def _small_cnn(n: Net, weight, dtype: int) -> list[str]:
    """conv(3->16)-BN-relu, conv(16->16)-relu + residual, conv(16->8) 1x1, GAP, flatten, fc(8->10); every
    weight through ``weight(name, array)`` (which returns the tensor the layer reads)."""
    r = n.rng
    w = lambda shape: (r.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(np.float32)  # noqa: E731
    b = lambda c: (0.1 * r.standard_normal(c)).astype(np.float32)  # noqa: E731
    conv = lambda x, name, shape, k: n.node("Conv", [x, weight(f"{name}_w", w(shape)), weight(f"{name}_b", b(shape[0]))],
                                            [name], kernel_shape=[k, k], pads=[k // 2] * 4)  # noqa: E731
    h = conv("x", "conv1", [16, 3, 3, 3], 3)
    bn = [weight(f"bn1_{p}", v.astype(np.float32)) for p, v in (
        ("scale", 1 + 0.3 * r.standard_normal(16)), ("bias", b(16)), ("mean", b(16)), ("var", 0.5 + r.random(16)))]
    h = n.node("BatchNormalization", [h] + bn, ["bn1"], epsilon=1e-3)
    h = n.node("Relu", [h], ["relu1"])
    h2 = n.node("Relu", [conv(h, "conv2", [16, 16, 3, 3], 3)], ["relu2"])
    h = n.node("Add", [h, h2], ["res"])
    h = n.node("Relu", [conv(h, "conv3", [8, 16, 1, 1], 1)], ["relu3"])
    h = n.node("GlobalAveragePool", [h], ["gap"])
    h = n.node("Flatten", [h], ["flat"], axis=1)
    fc = w([10, 8])
    return [n.node("Gemm", [h, weight("fc_w", fc), weight("fc_b", b(10))], ["logits"], transB=1)]


def half_cnn(dtype: int) -> onnx.ModelProto:
    """The small CNN computed in fp16 end to end: fp16 input, weights and output (a --half export)."""
    n = Net()
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(dtype)
    _small_cnn(n, lambda name, value: n.param(name, value.astype(np_dtype)), dtype)
    return n.model([helper.make_tensor_value_info("x", dtype, IMAGE)],
                   [helper.make_tensor_value_info("logits", dtype, [1, 10])], 18, ir_version=8, inits_as_inputs=False)


def cast_weights_cnn(dtype: int) -> onnx.ModelProto:
    """The small CNN in float32 whose weights are stored in ``dtype`` (fp16 or bf16) and Cast to float before
    use: half the file, full-precision compute (onnxruntime's CPU provider has no bf16 kernels)."""
    n = Net()

    def stored(name, value):
        if dtype == TensorProto.BFLOAT16:
            # onnx rounds the float values to bfloat16 (nearest even) itself
            n.inits.append(helper.make_tensor(f"{name}_stored", dtype, value.shape, value.ravel().tolist()))
        else:
            n.param(f"{name}_stored", value.astype(np.float16))
        return n.node("Cast", [f"{name}_stored"], [name], to=TensorProto.FLOAT)

    _small_cnn(n, stored, TensorProto.FLOAT)
    return n.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, IMAGE)],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], 18, ir_version=8,
                   inits_as_inputs=False)


def int8_weight_only_cnn() -> onnx.ModelProto:
    """The small CNN with weight-only int8 quantization of its conv and fc weights: int8 weights Cast to float,
    minus a per-output-channel zero point, times a per-output-channel scale, before use (biases, BN float)."""
    n = Net()

    def quantized(name, value):
        if not name.endswith("_w"):
            return n.param(name, value)
        axes = tuple(range(1, value.ndim))
        low, high = value.min(axis=axes, keepdims=True), value.max(axis=axes, keepdims=True)
        scale = ((high - low) / 255).astype(np.float32)
        zero = np.round(-128 - low / scale).astype(np.int8)
        q = np.clip(np.round(value / scale) + zero, -128, 127).astype(np.int8)
        as_float = n.node("Cast", [n.param(f"{name}_q", q)], [f"{name}_qf"], to=TensorProto.FLOAT)
        zero_f = n.node("Cast", [n.param(f"{name}_zero", zero)], [f"{name}_zf"], to=TensorProto.FLOAT)
        centred = n.node("Sub", [as_float, zero_f], [f"{name}_centred"])
        return n.node("Mul", [centred, n.param(f"{name}_scale", scale)], [name])

    _small_cnn(n, quantized, TensorProto.FLOAT)
    return n.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, IMAGE)],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], 18, ir_version=8,
                   inits_as_inputs=False)


MODELS = {
    "zoo_ir3": (lambda: zoo_net(9), "model-zoo style, IR 3, initializers also graph inputs, opset 9: "
                                    "conv-relu, conv-BN-relu + residual, maxpool, 1x1 conv, GAP, fc, softmax"),
    "zoo_opset7": (lambda: zoo_net(7), "the zoo_ir3 network at opset 7 (BatchNormalization v7 spatial, Gemm v7)"),
    "zoo_opset8": (lambda: zoo_net(8), "the zoo_ir3 network at opset 8 (MaxPool v8)"),
    "scan_opset8": (scan_opset8, "opset 8 Scan with sequence_lens (onnx's version converter cannot upgrade it)"),
    "zoo_constant_weights": (lambda: zoo_net(9, constant_weights=True),
                             "AlexNet/ZFNet zoo style, IR 3: conv1 weight by Tile, conv2 and fc weights by "
                             "Expand, conv3 bias by ConstantOfShape, from constants"),
    "reflect_pad": (lambda: reflect_pad(16), "a reflect Pad of 16 over a dynamic sample count: the default "
                                            "stand-in of 8 samples does not run"),
    "reflect_pad_wide": (lambda: reflect_pad(5000), "a reflect Pad of 5000: no stand-in up to 2048 runs"),
    "scalar_gain": (scalar_gain, "conv, times a scalar (rank 0) input, relu, 1x1 conv, dynamic time axis"),
    "gcn_matmul": (gcn_matmul, "GCN as MatMuls: relu(A @ X @ W + b) twice (8 -> 16 -> 12), mean readout, "
                               "MatMul classifier; x [nodes, 8], adj [nodes, nodes]"),
    "if_convs": (if_convs, "conv-relu, an If (on the input's mean) whose branches hold two convs each on the outer "
                           "activation (weights as Constant nodes / branch initializers), conv-relu-conv after"),
    "loop_constant_weights": (loop_constant_weights, "conv, a Loop of 3 residual conv-relu-conv steps whose body "
                                                     "weights are Constant nodes, conv-relu-conv after"),
    "scan_convs": (scan_convs, "conv-relu over 4 frames, a Scan over them whose body runs conv-relu-conv (its own "
                               "initializers) into a carried sum and a per-frame output, conv-relu-conv after"),
    "fp16_cnn": (lambda: half_cnn(TensorProto.FLOAT16), "a small CNN (conv-BN-relu, residual conv, 1x1 conv, GAP, "
                                                        "fc) computed in fp16: fp16 input, weights, output"),
    "fp16_cast_weights": (lambda: cast_weights_cnn(TensorProto.FLOAT16), "the small CNN in float32, every weight "
                                                                         "stored fp16 and Cast to float"),
    "bf16_cast_weights": (lambda: cast_weights_cnn(TensorProto.BFLOAT16), "the small CNN in float32, every weight "
                                                                          "stored bf16 and Cast to float"),
    "int8_weight_only": (int8_weight_only_cnn, "the small CNN, conv/fc weights int8: Cast, Sub a per-channel zero "
                                               "point, Mul a per-channel scale before use"),
    **QUANTIZED,
    **WINDOWS,
    **GROUPED,
}


def _feeds(model: onnx.ModelProto, nodes: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value if d.HasField("dim_value") else 12000 if d.dim_param == "samples" else nodes
                 for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = (np.full(shape, 3) if dtype.kind == "i" else rng.standard_normal(shape)).astype(dtype)
    return feeds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=OUT_DIR)
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    rows = []
    for name, (build, description) in MODELS.items():
        model = build()
        onnx.checker.check_model(model)
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, _feeds(model))
        path = os.path.join(args.out_dir, f"{name}.onnx")
        onnx.save(model, path)
        kb = os.path.getsize(path) / 1024
        opset = model.opset_import[0].version
        rows.append(f"| {name}.onnx | {kb:.0f} | {len(model.graph.node)} | {model.ir_version} | {opset} "
                    f"| {description} |")
        print(f"wrote {path} ({kb:.0f} KB)", file=sys.stderr)
    with open(os.path.join(args.out_dir, "README.md"), "w") as f:
        f.write("# Real-world-style test models (issue 17)\n\n"
                "Written by `scripts/build_realworld_models.py` (onnx.helper and seeded numpy, no torch; do not\n"
                "edit by hand, rerun the script). Each passes onnx.checker and runs in onnxruntime.\n\n"
                "| file | KB | nodes | IR | opset | model |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
