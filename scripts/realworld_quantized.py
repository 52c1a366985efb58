"""The quantized models of issue 17 for ``scripts/build_realworld_models.py``, laid out as the quantizers write them.

* ``qdq_conv``: TensorRT-style QDQ: int8 weights per output channel (symmetric), activations per tensor (uint8);
* ``qdq_matmul``: a transformer MLP in QDQ with per-column int8 weights;
* ``conv_integer_dynamic``: onnxruntime's dynamic quantization: DynamicQuantizeLinear, ConvInteger and
  MatMulInteger, Cast, times x_scale * weight scale, plus the bias;
* ``qlinear_conv``: onnxruntime's static QOperator format: QuantizeLinear, QLinearConv (per-channel weight
  scales, int32 bias), QLinearMatMul head, DequantizeLinear;
* ``matmul_nbits``: an LLM gated MLP with com.microsoft MatMulNBits int4 weights (blocks of 32 along K, packed
  nibbles and zero points built with numpy in onnxruntime's layout);
* ``dynamic_quantize_lstm``: a conv front end and a com.microsoft DynamicQuantizeLSTM (an OCR recognizer's shape).

Weights are quantized from seeded float weights the way the quantizers do it (symmetric per channel for int8
weights; asymmetric per block for int4).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 17
MS = "com.microsoft"


# ---- MatMulNBits packing (onnxruntime's contrib op layout) ---------------------------------------------------
def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes along the last axis into bytes, low bits first; the last byte padded with zeros."""
    per = 8 // bits
    pad = (-codes.shape[-1]) % per
    codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (pad,), codes.dtype)], axis=-1).astype(np.uint32)
    grouped = codes.reshape(*codes.shape[:-1], -1, per)
    return np.bitwise_or.reduce(grouped << (np.arange(per, dtype=np.uint32) * bits), axis=-1).astype(np.uint8)


def quantize_nbits(w: np.ndarray, block: int, bits: int = 4, zero_points: bool = True):
    """W [K, N] quantized per block of ``block`` along K as MatMulNBits stores it: B [N, k_blocks, blob_size],
    scales [N * k_blocks], packed zero points [N * ceil(k_blocks * bits / 8)] (None: symmetric, the default
    zero point 2^(bits-1)), and the dequantized W [K, N]."""
    k, n = w.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), np.float32)
    padded[:k] = w
    grid = padded.T.reshape(n, blocks, block)
    top = (1 << bits) - 1
    if zero_points:
        lo, hi = np.minimum(grid.min(-1), 0), np.maximum(grid.max(-1), 0)
        scale = np.maximum(hi - lo, 1e-6) / top
        zero = np.clip(np.round(-lo / scale), 0, top).astype(np.uint8)
    else:
        scale = np.maximum(np.abs(grid).max(-1), 1e-6) / (1 << (bits - 1))
        zero = np.full((n, blocks), 1 << (bits - 1), np.uint8)
    codes = np.clip(np.round(grid / scale[..., None]) + zero[..., None], 0, top).astype(np.uint8)
    real = ((codes.astype(np.float32) - zero[..., None]) * scale[..., None]).reshape(n, -1)[:, :k].T
    packed_zero = pack(zero, bits).reshape(-1) if zero_points else None
    return pack(codes, bits), scale.astype(np.float32).reshape(-1), packed_zero, real


def nbits_layer(name: str, a: str, w: np.ndarray, block: int, bits: int = 4, zero_points: bool = True,
                bias: np.ndarray | None = None):
    """(node, initializers) of ``a @ W (+ bias)`` as one MatMulNBits; W is [K, N]."""
    b, scales, zero, _ = quantize_nbits(w, block, bits, zero_points)
    inits = [numpy_helper.from_array(b, f"{name}_B"), numpy_helper.from_array(scales, f"{name}_scales")]
    inputs = [a, f"{name}_B", f"{name}_scales"]
    if zero is not None:
        inits.append(numpy_helper.from_array(zero, f"{name}_zero_points"))
        inputs.append(f"{name}_zero_points")
    if bias is not None:
        inputs += [""] * (5 - len(inputs)) + [f"{name}_bias"]
        inits.append(numpy_helper.from_array(bias.astype(np.float32), f"{name}_bias"))
    node = helper.make_node("MatMulNBits", inputs, [name], name=name, domain=MS, K=w.shape[0], N=w.shape[1],
                            bits=bits, block_size=block)
    return node, inits


# ---- graphs ------------------------------------------------------------------------------------------------
class QNet:
    """Nodes and initializers of one graph, with seeded float weights quantized the quantizers' way."""

    def __init__(self, seed: int = SEED):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def param(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs, outputs, domain: str = "", **attrs):
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=outputs[0], domain=domain, **attrs))
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def float_weight(self, shape, fan_in: int) -> np.ndarray:
        return (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def int8_per_channel(self, name: str, w: np.ndarray, axis: int):
        """Symmetric int8 per channel along ``axis``: (codes name, scale name, zero point name, scale array)."""
        other = tuple(a for a in range(w.ndim) if a != axis)
        scale = np.maximum(np.abs(w).max(axis=other), 1e-8) / 127.0
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        return (self.param(f"{name}_quantized", q), self.param(f"{name}_scale", scale.astype(np.float32)),
                self.param(f"{name}_zero_point", np.zeros(len(scale), np.int8)), scale.astype(np.float32))

    def qdq(self, x: str, name: str, scale: float, zero: int = 128) -> str:
        """Activation fake-quantization, per tensor uint8 (QuantizeLinear then DequantizeLinear)."""
        s, z = self.param(f"{name}_scale", np.float32(scale)), self.param(f"{name}_zero_point", np.uint8(zero))
        q = self.node("QuantizeLinear", [x, s, z], [f"{name}_quantized"])
        return self.node("DequantizeLinear", [q, s, z], [f"{name}_dequantized"])

    def qdq_weight(self, name: str, w: np.ndarray, axis: int) -> str:
        q, s, z, _ = self.int8_per_channel(name, w, axis)
        return self.node("DequantizeLinear", [q, s, z], [f"{name}_dequantized"], axis=axis)

    def model(self, inputs, outputs, opset: int = 17, contrib: bool = False) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "main", inputs, outputs, self.inits)
        opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(MS, 1)] if contrib else [])
        model = helper.make_model(graph, opset_imports=opsets, producer_name="build_realworld_models")
        model.ir_version = 8
        return model


IMAGE = [1, 3, 16, 16]


def _image_input():
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, IMAGE)


def qdq_conv() -> onnx.ModelProto:
    """conv 3->16 -> relu -> conv 16->32 (stride 2) -> relu -> conv1x1 32->16 -> relu -> GAP -> fc 16->10, QDQ."""
    n = QNet(1)
    h = n.qdq("image", "in", 0.03)
    for k, (cin, cout, kernel, stride) in enumerate(((3, 16, 3, 1), (16, 32, 3, 2), (32, 16, 1, 1))):
        w = n.qdq_weight(f"conv{k}_w", n.float_weight([cout, cin, kernel, kernel], cin * kernel * kernel), 0)
        b = n.param(f"conv{k}_b", (0.1 * n.rng.standard_normal(cout)).astype(np.float32))
        h = n.node("Conv", [h, w, b], [f"conv{k}"], pads=[kernel // 2] * 4, strides=[stride] * 2)
        h = n.qdq(n.node("Relu", [h], [f"relu{k}"]), f"relu{k}_q", 0.02, 0)
    h = n.node("Flatten", [n.node("GlobalAveragePool", [h], ["gap"])], ["flat"])
    w = n.qdq_weight("fc_w", n.float_weight([10, 16], 16), 0)
    b = n.param("fc_b", np.zeros(10, np.float32))
    n.node("Gemm", [h, w, b], ["logits"], transB=1)
    return n.model([_image_input()], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])])


def qdq_matmul() -> onnx.ModelProto:
    """A transformer MLP in QDQ: x [1, 8, 32] -> MatMul 32->128 (+b) -> relu -> MatMul 128->32 (+b) -> + x."""
    n = QNet(2)
    h = n.qdq("x", "in", 0.03)
    w1 = n.qdq_weight("fc1_w", n.float_weight([32, 128], 32), 1)
    h = n.node("Add", [n.node("MatMul", [h, w1], ["fc1"]), n.param("fc1_b", np.zeros(128, np.float32))], ["fc1_biased"])
    h = n.qdq(n.node("Relu", [h], ["act"]), "act_q", 0.02, 0)
    w2 = n.qdq_weight("fc2_w", n.float_weight([128, 32], 128), 1)
    h = n.node("Add", [n.node("MatMul", [h, w2], ["fc2"]), n.param("fc2_b", np.zeros(32, np.float32))], ["fc2_biased"])
    n.node("Add", [h, "x"], ["y"])
    return n.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32])])


def _dynamic_layer(n: QNet, x: str, name: str, w: np.ndarray, conv: bool) -> str:
    """onnxruntime's dynamic quantization of a layer (its ``quantize_dynamic`` layout)."""
    xq, xs, xzp = n.node("DynamicQuantizeLinear", [x], [f"{name}_x_q", f"{name}_x_scale", f"{name}_x_zp"])
    axis = 0 if conv else 1
    q, s, z, scale = n.int8_per_channel(f"{name}_w", w, axis)
    if conv:  # onnxruntime's ConvInteger takes a per-tensor weight zero point only
        n.inits.pop()
        z = n.param(f"{name}_w_zero_point", np.int8(0))
    y = n.node("ConvInteger" if conv else "MatMulInteger", [xq, q, xzp, z], [f"{name}_int"],
               **({"pads": [w.shape[2] // 2] * 4} if conv else {}))
    y = n.node("Cast", [y], [f"{name}_float"], to=TensorProto.FLOAT)
    s = n.node("Mul", [xs, s], [f"{name}_scale_product"])
    if conv:
        s = n.node("Reshape", [s, n.param(f"{name}_scale_shape", np.array([-1, 1, 1], np.int64))], [f"{name}_scales"])
    y = n.node("Mul", [y, s], [f"{name}_scaled"])
    bias = (0.1 * n.rng.standard_normal(w.shape[0] if conv else w.shape[1])).astype(np.float32)
    return n.node("Add", [y, n.param(f"{name}_b", bias.reshape(-1, 1, 1) if conv else bias)], [name])


def conv_integer_dynamic() -> onnx.ModelProto:
    """conv 3->16 -> relu -> conv 16->32 -> relu -> GAP -> flatten -> fc 32->10, dynamically quantized (int8)."""
    n = QNet(3)
    h = "image"
    for k, (cin, cout) in enumerate(((3, 16), (16, 32))):
        h = n.node("Relu", [_dynamic_layer(n, h, f"conv{k}", n.float_weight([cout, cin, 3, 3], cin * 9), True)],
                   [f"relu{k}"])
    h = n.node("Flatten", [n.node("GlobalAveragePool", [h], ["gap"])], ["flat"])
    _dynamic_layer(n, h, "logits", n.float_weight([32, 10], 32), False)
    return n.model([_image_input()], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])])


def qlinear_conv() -> onnx.ModelProto:
    """QOperator: quantize -> QLinearConv 3->16 -> QLinearConv 16->16 depthwise -> QLinearConv 16->32 (stride 2)
    -> dequantize -> GAP -> flatten -> quantize -> QLinearMatMul 32->10 -> dequantize. Relu folded into the
    output ranges (zero point 0), as onnxruntime's quantizer does."""
    n = QNet(4)
    scales = [0.03, 0.02, 0.02, 0.02]
    zeros = [128, 0, 0, 0]
    act = [(n.param(f"act{k}_scale", np.float32(s)), n.param(f"act{k}_zero_point", np.uint8(z)))
           for k, (s, z) in enumerate(zip(scales, zeros))]
    h = n.node("QuantizeLinear", ["image", *act[0]], ["image_quantized"])
    for k, (cin, cout, group, stride) in enumerate(((3, 16, 1, 1), (16, 16, 16, 1), (16, 32, 1, 2))):
        w = n.float_weight([cout, cin // group, 3, 3], cin // group * 9)
        q, s, z, scale = n.int8_per_channel(f"conv{k}_w", w, 0)
        bias = np.round(0.1 * n.rng.standard_normal(cout) / (scales[k] * scale)).astype(np.int32)
        h = n.node("QLinearConv", [h, *act[k], q, s, z, *act[k + 1], n.param(f"conv{k}_b", bias)], [f"conv{k}"],
                   pads=[1, 1, 1, 1], strides=[stride] * 2, group=group)
    h = n.node("DequantizeLinear", [h, *act[3]], ["conv_out"])
    h = n.node("Flatten", [n.node("GlobalAveragePool", [h], ["gap"])], ["flat"])
    fc_in = (n.param("fc_in_scale", np.float32(0.01)), n.param("fc_in_zero_point", np.uint8(0)))
    out = (n.param("logits_scale", np.float32(0.05)), n.param("logits_zero_point", np.uint8(128)))
    q, s, z, _ = n.int8_per_channel("fc_w", n.float_weight([32, 10], 32), 1)
    h = n.node("QLinearMatMul", [n.node("QuantizeLinear", ["flat", *fc_in], ["flat_quantized"]), *fc_in, q, s, z, *out],
               ["fc"])
    n.node("DequantizeLinear", [h, *out], ["logits"])
    return n.model([_image_input()], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])])


def matmul_nbits() -> onnx.ModelProto:
    """An LLM gated MLP in int4: down(silu(gate(x)) * up(x)) + x, x [1, 8, 64], hidden 256, blocks of 32 along K."""
    n = QNet(5)
    for name, k, m in (("gate", 64, 256), ("up", 64, 256), ("down", 256, 64)):
        node, inits = nbits_layer(name, "x" if name != "down" else "gated", n.float_weight([k, m], k), 32)
        n.nodes.append(node)
        n.inits += inits
    down = n.nodes.pop()
    silu = n.node("Mul", ["gate", n.node("Sigmoid", ["gate"], ["gate_sigmoid"])], ["gate_silu"])
    n.node("Mul", [silu, "up"], ["gated"])
    n.nodes.append(down)
    n.node("Add", ["down", "x"], ["y"])
    return n.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 64])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 64])], contrib=True)


def dynamic_quantize_lstm() -> onnx.ModelProto:
    """An OCR recognizer's tail: features [T=12, 1, 32] -> MatMul 32->48 -> DynamicQuantizeLSTM (bidirectional,
    hidden 32, int8 W and R per direction) -> [T, 1, 64] -> MatMul 64->20 (characters)."""
    n = QNet(6)
    seq, feat, inp, hidden = 12, 32, 48, 32
    h = n.node("MatMul", ["features", n.param("proj_w", n.float_weight([feat, inp], feat))], ["proj"])
    quantized = []
    for name, rows in (("W", inp), ("R", hidden)):
        w = n.float_weight([2, rows, 4 * hidden], rows)
        scale = np.abs(w).max(axis=(1, 2)) / 127.0
        quantized.append((n.param(f"lstm_{name}", np.round(w / scale[:, None, None]).astype(np.int8)),
                          n.param(f"lstm_{name}_scale", scale.astype(np.float32)),
                          n.param(f"lstm_{name}_zero_point", np.zeros(2, np.int8))))
    (w, ws, wz), (r, rs, rz) = quantized
    b = n.param("lstm_B", (0.1 * n.rng.standard_normal((2, 8 * hidden))).astype(np.float32))
    y = n.node("DynamicQuantizeLSTM", [h, w, r, b, "", "", "", "", ws, wz, rs, rz], ["lstm"], domain=MS,
               hidden_size=hidden, direction="bidirectional")
    y = n.node("Transpose", [y], ["lstm_t"], perm=[0, 2, 1, 3])
    y = n.node("Reshape", [y, n.param("lstm_shape", np.array([seq, 1, 2 * hidden], np.int64))], ["lstm_flat"])
    n.node("MatMul", [y, n.param("head_w", n.float_weight([2 * hidden, 20], 2 * hidden))], ["chars"])
    return n.model([helper.make_tensor_value_info("features", TensorProto.FLOAT, [seq, 1, feat])],
                   [helper.make_tensor_value_info("chars", TensorProto.FLOAT, [seq, 1, 20])], contrib=True)


def qlinear_contrib() -> onnx.ModelProto:
    """onnxruntime's QOperator format around the convolutions, as its static quantizer writes a mobile CNN:
    QLinearConv 3->16 -> squeeze-excite (QLinearGlobalAveragePool, QLinearConv 16->8->16, QLinearSigmoid,
    QLinearMul) -> QLinearConv 16->16 -> QLinearAdd (residual) -> QLinearLeakyRelu -> QLinearConcat with a
    QLinearConv 16->8 of the residual sum -> QLinearAveragePool -> dequantize. uint8 activations, one scale and
    zero point per tensor; int8 weights per output channel."""
    n = QNet(7)
    act = (n.param("act_scale", np.float32(0.05)), n.param("act_zero_point", np.uint8(128)))
    gate = (n.param("gate_scale", np.float32(1 / 255)), n.param("gate_zero_point", np.uint8(0)))

    def conv(x, name, cin, cout, k=3, out=act):
        w = n.float_weight([cout, cin, k, k], cin * k * k)
        q, s, z, scale = n.int8_per_channel(f"{name}_w", w, 0)
        bias = np.round(0.1 * n.rng.standard_normal(cout) / (0.05 * scale)).astype(np.int32)
        return n.node("QLinearConv", [x, *act, q, s, z, *out, n.param(f"{name}_b", bias)], [name],
                      pads=[k // 2] * 4)

    h = conv(n.node("QuantizeLinear", ["image", *act], ["image_quantized"]), "stem", 3, 16)
    pooled = n.node("QLinearGlobalAveragePool", [h, *act, *act], ["se_pool"], domain=MS, channels_last=0)
    squeeze = conv(pooled, "se_reduce", 16, 8, k=1)
    excite = n.node("QLinearSigmoid", [conv(squeeze, "se_expand", 8, 16, k=1), *act, *gate], ["se_gate"], domain=MS)
    h2 = n.node("QLinearMul", [h, *act, excite, *gate, *act], ["se_out"], domain=MS)
    h3 = n.node("QLinearAdd", [conv(h2, "body", 16, 16), *act, h, *act, *act], ["residual"], domain=MS)
    h3 = n.node("QLinearLeakyRelu", [h3, *act, *act], ["residual_act"], domain=MS, alpha=0.1)
    joined = n.node("QLinearConcat", [*act, h3, *act, conv(h3, "side", 16, 8, k=1), *act], ["joined"],
                    domain=MS, axis=1)
    pooled = n.node("QLinearAveragePool", [joined, *act, *act], ["pool"], domain=MS, kernel_shape=[2, 2],
                    strides=[2, 2])
    n.node("DequantizeLinear", [conv(pooled, "head", 24, 10, k=1), *act], ["features"])
    return n.model([_image_input()], [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 10, 8, 8])],
                   contrib=True)


QUANTIZED = {
    "qdq_conv": (qdq_conv, "QDQ (TensorRT style): int8 per-channel conv weights, uint8 per-tensor activations; "
                           "3 convs, GAP, fc"),
    "qdq_matmul": (qdq_matmul, "QDQ transformer MLP: int8 per-column weights 32 -> 128 -> 32, residual"),
    "conv_integer_dynamic": (conv_integer_dynamic, "onnxruntime dynamic quantization: DynamicQuantizeLinear, "
                                                   "ConvInteger x2, MatMulInteger, Cast, scale Mul, bias Add"),
    "qlinear_conv": (qlinear_conv, "QOperator: QLinearConv (per-channel scales, int32 bias, a depthwise one), "
                                   "QLinearMatMul head"),
    "qlinear_contrib": (qlinear_contrib, "QOperator around the convs: QLinearGlobalAveragePool, QLinearSigmoid, "
                                         "QLinearMul (squeeze-excite), QLinearAdd, QLinearLeakyRelu, QLinearConcat, "
                                         "QLinearAveragePool"),
    "matmul_nbits": (matmul_nbits, "int4 com.microsoft MatMulNBits gated MLP 64 -> 256 -> 64, blocks of 32, "
                                   "packed zero points"),
    "dynamic_quantize_lstm": (dynamic_quantize_lstm, "OCR-style tail: MatMul, bidirectional com.microsoft "
                                                     "DynamicQuantizeLSTM (int8 W, R per direction), MatMul"),
}
