"""Small test CNNs built with GraphBuilder (no torch), shaped like PyTorch exports.

ARCHITECTURES maps a name to a zero-argument factory returning a checked
onnx.ModelProto. Every model has one float32 input named "input".
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from support.builder import GraphBuilder


# ---- shared pieces -------------------------------------------------------
def _cbr(b: GraphBuilder, x, cout, k=3, stride=1, act="relu", group=1):
    """Conv(no bias) -> BN -> activation (relu | relu6 | hardswish | silu | None)."""
    y = b.bn(b.conv(x, cout, k=k, stride=stride, group=group, bias=False))
    return y if act is None else getattr(b, act)(y)


def _head(b: GraphBuilder, x, ncls=10, name="output"):
    """GlobalAveragePool -> Flatten -> Gemm, output renamed to `name`."""
    y = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    out = b.rename(b.gemm(y, ncls), name)
    b.output(out)
    return out


def _maxpool(b, x, k=2, s=2, p=0):
    return b.op("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)


def _resize2x(b, x):
    """Nearest 2x upsample as torch exports nn.Upsample(scale_factor=2)."""
    scales = b.const(np.array([1, 1, 2, 2], np.float32))
    return b.op("Resize", [x, "", scales], mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _concat(b, xs):
    return b.op("Concat", list(xs), axis=1)


def _se(b, x, csq, act="relu", gate="HardSigmoid"):
    """Squeeze-excitation: GAP -> 1x1 conv -> act -> 1x1 conv -> gate -> Mul."""
    c = b.shape_of(x)[1]
    s = getattr(b, act)(b.conv(b.op("GlobalAveragePool", [x]), csq, k=1))
    s = b.conv(s, c, k=1)
    s = b.op("HardSigmoid", [s], alpha=1.0 / 6, beta=0.5) if gate == "HardSigmoid" else b.op("Sigmoid", [s])
    return b.op("Mul", [s, x])


# ---- architectures -----------------------------------------------------
def plain_cnn() -> onnx.ModelProto:
    b = GraphBuilder(seed=1, name="plain_cnn")
    x = b.input("input", [1, 3, 32, 32])
    x = _maxpool(b, _cbr(b, x, 16))
    x = _cbr(b, _cbr(b, x, 32), 32)
    _head(b, x)
    return b.build()


def vgg_flatten_gemm() -> onnx.ModelProto:
    b = GraphBuilder(seed=2, name="vgg_flatten_gemm")
    x = b.input("input", [1, 3, 32, 32])
    for cs in ([16, 16], [32], [32]):
        for c in cs:
            x = b.relu(b.conv(x, c))
        x = _maxpool(b, x)  # 32 -> 16 -> 8 -> 4
    x = b.op("Flatten", [x], axis=1)  # [1, 32*4*4]: one channel = 16 features
    x = b.relu(b.gemm(x, 64))
    b.output(b.rename(b.gemm(x, 10), "output"))
    return b.build()


def _basic_block(b, x, cout, stride=1):
    cin = b.shape_of(x)[1]
    y = _cbr(b, x, cout, stride=stride)
    y = _cbr(b, y, cout, act=None)
    sc = x if (stride == 1 and cin == cout) else _cbr(b, x, cout, k=1, stride=stride, act=None)
    return b.relu(b.op("Add", [y, sc]))


def resnet_basic() -> onnx.ModelProto:
    b = GraphBuilder(seed=3, name="resnet_basic")
    x = _cbr(b, b.input("input", [1, 3, 32, 32]), 16)
    x = _basic_block(b, _basic_block(b, x, 16), 16)
    x = _basic_block(b, _basic_block(b, x, 32, stride=2), 32)
    _head(b, x)
    return b.build()


def _bottleneck(b, x, width, cout, stride=1, group=1):
    cin = b.shape_of(x)[1]
    y = _cbr(b, x, width, k=1)
    y = _cbr(b, y, width, k=3, stride=stride, group=group)
    y = _cbr(b, y, cout, k=1, act=None)
    sc = x if (stride == 1 and cin == cout) else _cbr(b, x, cout, k=1, stride=stride, act=None)
    return b.relu(b.op("Add", [y, sc]))


def resnet_bottleneck() -> onnx.ModelProto:
    b = GraphBuilder(seed=4, name="resnet_bottleneck")
    x = _maxpool(b, _cbr(b, b.input("input", [1, 3, 32, 32]), 16, stride=2), k=3, s=2, p=1)
    x = _bottleneck(b, x, 8, 32)             # projection shortcut (16 -> 32)
    x = _bottleneck(b, x, 8, 32)             # identity shortcut
    x = _bottleneck(b, x, 16, 64, stride=2)  # strided projection
    _head(b, x)
    return b.build()


def densenet() -> onnx.ModelProto:
    b = GraphBuilder(seed=5, name="densenet")
    x = b.conv(b.input("input", [1, 3, 32, 32]), 16, bias=False)
    growth, feats = 8, [x]
    for _ in range(3):
        inp = feats[0] if len(feats) == 1 else _concat(b, feats)
        y = b.conv(b.relu(b.bn(inp)), 4 * growth, k=1, bias=False)
        feats.append(b.conv(b.relu(b.bn(y)), growth, bias=False))
    x = _concat(b, feats)  # 16 + 3*8 = 40
    x = b.conv(b.relu(b.bn(x)), 20, k=1, bias=False)  # transition
    x = b.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    _head(b, b.relu(b.bn(x)))
    return b.build()


def inception() -> onnx.ModelProto:
    b = GraphBuilder(seed=6, name="inception")
    x = _maxpool(b, _cbr(b, b.input("input", [1, 3, 32, 32]), 16))
    b1 = _cbr(b, x, 8, k=1)
    b2 = _cbr(b, _cbr(b, x, 8, k=1), 16, k=3)
    b3 = _cbr(b, _cbr(b, x, 4, k=1), 8, k=5)
    b4 = _cbr(b, _maxpool(b, x, k=3, s=1, p=1), 8, k=1)
    x = _cbr(b, _concat(b, [b1, b2, b3, b4]), 32)  # 8+16+8+8 = 40 -> 32
    _head(b, x)
    return b.build()


def _inverted_residual(b, x, cout, expand, stride):
    cin = b.shape_of(x)[1]
    y = x if expand == 1 else _cbr(b, x, cin * expand, k=1, act="relu6")
    c = b.shape_of(y)[1]
    y = _cbr(b, y, c, k=3, stride=stride, group=c, act="relu6")
    y = _cbr(b, y, cout, k=1, act=None)
    return b.op("Add", [x, y]) if stride == 1 and cin == cout else y


def mobilenetv2() -> onnx.ModelProto:
    b = GraphBuilder(seed=7, name="mobilenetv2")
    x = _cbr(b, b.input("input", [1, 3, 32, 32]), 16, stride=2, act="relu6")
    x = _inverted_residual(b, x, 8, expand=1, stride=1)
    x = _inverted_residual(b, x, 16, expand=4, stride=2)
    x = _inverted_residual(b, x, 16, expand=4, stride=1)  # residual
    x = _inverted_residual(b, x, 24, expand=4, stride=1)
    x = _inverted_residual(b, x, 24, expand=4, stride=1)  # residual
    _head(b, _cbr(b, x, 64, k=1, act="relu6"))
    return b.build()


def mobilenetv3() -> onnx.ModelProto:
    b = GraphBuilder(seed=8, name="mobilenetv3")
    x = _cbr(b, b.input("input", [1, 3, 32, 32]), 16, stride=2, act="hardswish")
    # block A: dw -> SE -> project, residual
    y = _cbr(b, x, 16, group=16, act="relu")
    y = _cbr(b, _se(b, y, 8), 16, k=1, act=None)
    x = b.op("Add", [x, y])
    # block B: expand -> dw 5x5 s2 -> SE -> project
    y = _cbr(b, x, 48, k=1, act="hardswish")
    y = _cbr(b, y, 48, k=5, stride=2, group=48, act="hardswish")
    x = _cbr(b, _se(b, y, 16), 24, k=1, act=None)
    # EfficientNet-style MBConv: SiLU + Sigmoid-gated SE, residual
    y = _cbr(b, x, 96, k=1, act="silu")
    y = _cbr(b, y, 96, group=96, act="silu")
    y = _cbr(b, _se(b, y, 6, act="silu", gate="Sigmoid"), 24, k=1, act=None)
    x = b.op("Add", [x, y])
    x = _cbr(b, x, 64, k=1, act="hardswish")
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    x = b.hardswish(b.gemm(x, 32))
    b.output(b.rename(b.gemm(x, 10), "output"))
    return b.build()


def _channel_shuffle(b, x, groups=2):
    n, c, h, w = b.shape_of(x)
    y = b.op("Reshape", [x, b.const(np.array([n, groups, c // groups, h, w], np.int64))])
    y = b.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
    return b.op("Reshape", [y, b.const(np.array([n, c, h, w], np.int64))])


def _shuffle_branch(b, x, c, stride):
    y = _cbr(b, x, c, k=1)
    y = _cbr(b, y, c, stride=stride, group=c, act=None)
    return _cbr(b, y, c, k=1)


def shufflenetv2() -> onnx.ModelProto:
    b = GraphBuilder(seed=9, name="shufflenetv2")
    x = _cbr(b, b.input("input", [1, 3, 32, 32]), 16, stride=2)
    x = _maxpool(b, x, k=3, s=2, p=1)  # 8x8
    # stride-2 unit
    b1 = _cbr(b, _cbr(b, x, 16, stride=2, group=16, act=None), 16, k=1)
    x = _channel_shuffle(b, _concat(b, [b1, _shuffle_branch(b, x, 16, 2)]))
    # stride-1 units
    for _ in range(2):
        c = b.shape_of(x)[1]
        x1, x2 = b.op("Split", [x, b.const(np.array([c // 2, c // 2], np.int64))], n_out=2, axis=1)
        x = _channel_shuffle(b, _concat(b, [x1, _shuffle_branch(b, x2, c // 2, 1)]))
    _head(b, _cbr(b, x, 64, k=1))
    return b.build()


def resnext() -> onnx.ModelProto:
    b = GraphBuilder(seed=10, name="resnext")
    x = _cbr(b, b.input("input", [1, 3, 32, 32]), 32, stride=2)
    x = _bottleneck(b, x, 32, 64, group=4)  # projection shortcut, 8 ch / group
    x = _bottleneck(b, x, 32, 64, group=4)  # identity shortcut
    _head(b, x)
    return b.build()


def unet() -> onnx.ModelProto:
    b = GraphBuilder(seed=11, name="unet")

    def block(x, c):
        return _cbr(b, _cbr(b, x, c), c)

    e1 = block(b.input("input", [1, 3, 32, 32]), 16)   # 32x32
    e2 = block(_maxpool(b, e1), 32)                      # 16x16
    m = block(_maxpool(b, e2), 64)                       # 8x8
    d2 = block(_concat(b, [b.conv_transpose(m, 32), e2]), 32)   # 16x16
    d1 = block(_concat(b, [_resize2x(b, d2), e1]), 16)           # 32x32
    b.output(b.rename(b.conv(d1, 2, k=1), "output"))
    return b.build()


def _c2f(b, x, cout, n=1, shortcut=True):
    """YOLOv8 C2f: 1x1 conv -> Split halves -> n chained bottlenecks -> Concat -> 1x1."""
    c = cout // 2
    y = _cbr(b, x, 2 * c, k=1, act="silu")
    ys = b.op("Split", [y, b.const(np.array([c, c], np.int64))], n_out=2, axis=1)
    for _ in range(n):
        z = _cbr(b, _cbr(b, ys[-1], c, act="silu"), c, act="silu")
        ys.append(b.op("Add", [ys[-1], z]) if shortcut else z)
    return _cbr(b, _concat(b, ys), cout, k=1, act="silu")


def yolo_neck() -> onnx.ModelProto:
    b = GraphBuilder(seed=12, name="yolo_neck")

    def down(x, c):
        return _cbr(b, x, c, stride=2, act="silu")

    x = down(down(b.input("input", [1, 3, 64, 64]), 8), 16)  # 16x16
    x = _c2f(b, x, 16)
    p3 = _c2f(b, down(x, 32), 32, n=2)   # stride 8: 8x8
    p4 = _c2f(b, down(p3, 48), 48)       # stride 16: 4x4
    p5 = _c2f(b, down(p4, 64), 64)       # stride 32: 2x2
    # top-down (FPN)
    n4 = _c2f(b, _concat(b, [_resize2x(b, p5), p4]), 48, shortcut=False)
    n3 = _c2f(b, _concat(b, [_resize2x(b, n4), p3]), 32, shortcut=False)
    # bottom-up (PAN)
    o4 = _c2f(b, _concat(b, [down(n3, 32), n4]), 48, shortcut=False)
    o5 = _c2f(b, _concat(b, [down(o4, 48), p5]), 64, shortcut=False)
    for name, t in (("out_p3", n3), ("out_p4", o4), ("out_p5", o5)):
        b.output(b.rename(b.conv(t, 16, k=1), name))
    return b.build()


ARCHITECTURES: dict[str, Callable[[], onnx.ModelProto]] = {
    "plain_cnn": plain_cnn,
    "vgg_flatten_gemm": vgg_flatten_gemm,
    "resnet_basic": resnet_basic,
    "resnet_bottleneck": resnet_bottleneck,
    "densenet": densenet,
    "inception": inception,
    "mobilenetv2": mobilenetv2,
    "mobilenetv3": mobilenetv3,
    "shufflenetv2": shufflenetv2,
    "resnext": resnext,
    "unet": unet,
    "yolo_neck": yolo_neck,
}
