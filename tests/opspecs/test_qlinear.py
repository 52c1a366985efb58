"""Integer convolutions and matrix products (opspecs/qlinear.py) and DynamicQuantizeLinear (opspecs/quantize.py).

Oracle: removing a group's channels equals masking them (quantized weights set to their zero point, float
parameters to 0), through onnxruntime's integer kernels, on graphs laid out as onnxruntime's static (QOperator)
and dynamic quantizers write them.
"""
import numpy as np
import pytest

from onnxprune.rules import IN, OUT, Barrier
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph

RNG = np.random.default_rng(11)


def _codes(shape, dtype=np.int8):
    info = np.iinfo(dtype)
    return RNG.integers(max(info.min, -60), min(info.max, 60) + (128 if dtype == np.uint8 else 0),
                        size=shape).astype(dtype)


def _scales(n):
    return RNG.uniform(0.002, 0.02, size=n).astype(np.float32)


def _qlinear_conv(b, x, x_s, x_zp, cin, cout, y_s, y_zp, group=1, per_channel=True):
    w = b.const(_codes([cout, cin // group, 3, 3]), prefix="w")
    w_s = b.const(_scales(cout) if per_channel else np.float32(0.01), prefix="w_s")
    w_zp = b.const(np.zeros(cout if per_channel else (), np.int8), prefix="w_zp")
    bias = b.const(RNG.integers(-500, 500, size=cout).astype(np.int32), prefix="bias")
    return b.op("QLinearConv", [x, x_s, x_zp, w, w_s, w_zp, y_s, y_zp, bias], pads=[1, 1, 1, 1], group=group)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
def test_qlinear_conv_chain_prunes_with_its_weight_scales(per_channel):
    """x -> QuantizeLinear -> QLinearConv (8) -> QLinearConv depthwise (8) -> QLinearConv (6) -> DequantizeLinear."""
    b = GraphBuilder(opset=17, seed=1)
    x = b.input("x", [1, 3, 8, 8])
    s = [b.const(np.float32(v), prefix="s") for v in (0.02, 0.05, 0.05, 0.08)]
    zp = [b.const(np.uint8(v), prefix="zp") for v in (128, 120, 130, 125)]
    q = b.op("QuantizeLinear", [x, s[0], zp[0]])
    h = _qlinear_conv(b, q, s[0], zp[0], 3, 8, s[1], zp[1], per_channel=per_channel)
    h = _qlinear_conv(b, h, s[1], zp[1], 8, 8, s[2], zp[2], group=8, per_channel=per_channel)
    h = _qlinear_conv(b, h, s[2], zp[2], 8, 6, s[3], zp[3], per_channel=per_channel)
    b.output(b.op("DequantizeLinear", [h, s[3], zp[3]]))
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    (group,) = dg.prunable_groups()
    assert group.size == 8  # the first conv's outputs, the depthwise conv's groups and the last conv's inputs
    weight_params = {e.tensor.rsplit("_", 1)[0] for e in group.ends if e.kind == "param"}
    assert weight_params == ({"w", "w_s", "w_zp", "bias"} if per_channel else {"w", "bias"})


def _dynamic_layer(b, x, op, w_shape, n_out, axis_bias):
    """onnxruntime's dynamic quantization of a layer: DynamicQuantizeLinear, the integer op, Cast, times
    x_scale * per-channel weight scale, plus the float bias."""
    xq, xs, xzp = b.op("DynamicQuantizeLinear", [x], n_out=3)
    w = b.const(_codes(w_shape), prefix="w")
    # ConvInteger: onnxruntime takes a per-tensor weight zero point only (here not 0: masking writes it);
    # MatMulInteger: one per column
    w_zp = b.const(np.int8(3) if op == "ConvInteger" else RNG.integers(-3, 3, size=n_out).astype(np.int8),
                   prefix="w_zp")
    y = b.op(op, [xq, w, xzp, w_zp], **({"pads": [1, 1, 1, 1]} if op == "ConvInteger" else {}))
    scale = b.op("Mul", [xs, b.const(_scales(n_out), prefix="w_scale")])
    if axis_bias:
        scale = b.op("Reshape", [scale, b.const(np.array([n_out, 1, 1], np.int64), prefix="shape")])
    y = b.op("Mul", [b.op("Cast", [y], to=1), scale])
    bias = b.const((0.1 * RNG.standard_normal([n_out, 1, 1] if axis_bias else [n_out])).astype(np.float32),
                   prefix="b")
    return b.op("Add", [y, bias])


def test_conv_integer_with_dynamic_quantization_prunes_exactly():
    """x -> [DynamicQuantizeLinear, ConvInteger] (8) -> Relu -> [DynamicQuantizeLinear, ConvInteger] (4): the
    run-time activation scale does not move when zeroed channels go (its range always holds 0)."""
    b = GraphBuilder(opset=17, seed=2)
    x = b.input("x", [1, 3, 8, 8])
    h = b.op("Relu", [_dynamic_layer(b, x, "ConvInteger", [8, 3, 3, 3], 8, True)])
    b.output(_dynamic_layer(b, h, "ConvInteger", [4, 8, 3, 3], 4, True))
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    assert [g.size for g in dg.prunable_groups()] == [8]


def test_matmul_integer_with_dynamic_quantization_prunes_exactly():
    b = GraphBuilder(opset=17, seed=3)
    x = b.input("x", [2, 5, 12])
    h = b.op("Relu", [_dynamic_layer(b, x, "MatMulInteger", [12, 16], 16, False)])
    b.output(_dynamic_layer(b, h, "MatMulInteger", [16, 6], 6, False))
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    assert [g.size for g in dg.prunable_groups()] == [16]


def test_qlinear_matmul_prunes_columns_with_per_column_scales():
    b = GraphBuilder(opset=17, seed=4)
    x = b.input("x", [4, 12])
    s = [b.const(np.float32(v), prefix="s") for v in (0.02, 0.05, 0.08)]
    zp = [b.const(np.uint8(v), prefix="zp") for v in (128, 120, 125)]
    h = b.op("QuantizeLinear", [x, s[0], zp[0]])
    for k, (cin, cout) in enumerate(((12, 16), (16, 6))):
        w = b.const(_codes([cin, cout]), prefix="w")
        h = b.op("QLinearMatMul", [h, s[k], zp[k], w, b.const(_scales(cout), prefix="w_s"),
                                   b.const(np.zeros(cout, np.int8), prefix="w_zp"), s[k + 1], zp[k + 1]])
    b.output(b.op("DequantizeLinear", [h, s[2], zp[2]]))
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    assert [g.size for g in dg.prunable_groups()] == [16]


def test_activation_scales_are_per_tensor_and_never_pruned():
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", [1, 3, 8, 8])
    s, zp = b.const(np.float32(0.02), prefix="s"), b.const(np.uint8(128), prefix="zp")
    y = _qlinear_conv(b, b.op("QuantizeLinear", [x, s, zp]), s, zp, 3, 8, s, zp)
    b.output(b.op("DequantizeLinear", [y, s, zp]))
    dg = depgraph(b.build())
    node = next(n for n in dg.graph.nodes if n.op_type == "QLinearConv")
    spec = dg.spec(node.name)
    for slot in (1, 2, 6, 7):
        answer = spec.couple(dg.view(node.name), IN(slot), ())
        assert isinstance(answer, Barrier) and "whole tensor" in answer.reason
    q = next(n for n in dg.graph.nodes if n.op_type == "QuantizeLinear")
    assert isinstance(dg.spec(q.name).couple(dg.view(q.name), IN(1), (0,)), Barrier)
