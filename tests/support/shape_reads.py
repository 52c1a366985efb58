"""Models whose channel sizes are read at run time (``Shape``) and fed to an op that builds or cuts a
tensor from them: Expand, Slice, ConstantOfShape, Range, Tile (issue 17). The batch stays symbolic, so the
Shape reads stay in the model (a fully static model folds them into constants).

``y`` (the first conv's output, width 8) is the tensor whose size is read; each model also has a second
conv ``h`` (width 8), so a size read that follows the wrong group shows up as a broadcast failure."""
from __future__ import annotations

import numpy as np
import onnx

from .builder import GraphBuilder

CASES = ("expand", "expand_coupled", "slice", "slice_other_axis", "constant_of_shape", "constant_of_shape_coupled",
         "range", "range_coupled", "tile", "tile_coupled", "scale")


def _channel_size(b: GraphBuilder, y: str, keepdims: bool = True) -> str:
    """``y.size(1)`` as torch exports it: Shape, Gather (a 1-element index keeps the axis)."""
    index = np.array([1], np.int64) if keepdims else np.array(1, np.int64)
    return b.op("Gather", [b.op("Shape", [y]), b.const(index)], axis=0)


def model(case: str, width: int = 8) -> onnx.ModelProto:
    b = GraphBuilder(seed=7, name=f"shape_read_{case}")
    x = b.input("input", ["N", 3, width, width])
    y = b.relu(b.conv(x, width))
    h = b.relu(b.conv(x, width))
    z1, z2 = y, h  # each branch its own group: they meet in a Concat
    if case == "expand":  # a constant broadcast to y's shape, multiplied into h
        z2 = b.op("Mul", [h, b.op("Expand", [b.param((1, 1, width, width)), b.op("Shape", [y])])])
    elif case == "expand_coupled":  # broadcast to y's shape (expand_as), multiplied into y itself
        z1 = b.op("Mul", [y, b.op("Expand", [b.param((1, 1, width, width)), b.op("Shape", [y])])])
    elif case == "slice":  # wide[:, :y.size(1)]: the first channels of a wider tensor, added to y
        wide = b.relu(b.conv(x, 2 * width))
        z1 = b.op("Add", [y, b.op("Slice", [wide, b.const(np.array([0], np.int64)), _channel_size(b, y),
                                             b.const(np.array([1], np.int64))])])
    elif case == "slice_other_axis":  # a crop whose length is y's channel count, added to h
        wide = b.relu(b.conv(b.input("other", ["N", 3, width, width + 4]), width))
        z2 = b.op("Add", [h, b.op("Slice", [wide, b.const(np.array([0], np.int64)), _channel_size(b, y),
                                             b.const(np.array([3], np.int64))])])
    elif case == "constant_of_shape":  # torch.ones_like(y) multiplied into h
        ones = b.op("ConstantOfShape", [b.op("Shape", [y])],
                    value=onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [1.0]))
        z2 = b.op("Mul", [h, ones])
    elif case == "constant_of_shape_coupled":  # torch.cat([y, torch.zeros_like(y)], 1)
        zeros = b.op("ConstantOfShape", [b.op("Shape", [y])],
                     value=onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [0.5]))
        z1 = b.op("Concat", [y, zeros], axis=1)
    elif case in ("range", "range_coupled"):  # a per-channel ramp 0..C-1 (torch.arange(y.size(1)))
        ramp = b.op("Range", [b.const(np.array(0, np.int64)), _channel_size(b, y, keepdims=False),
                              b.const(np.array(1, np.int64))])
        ramp = b.op("Reshape", [b.op("Cast", [ramp], to=onnx.TensorProto.FLOAT),
                                b.const(np.array([1, -1, 1, 1], np.int64))])
        if case == "range":
            z2 = b.op("Add", [h, ramp])
        else:
            z1 = b.op("Add", [y, ramp])
    elif case in ("tile", "tile_coupled"):  # a constant repeated y.size(1) times along the channels
        repeats = b.op("Concat", [b.const(np.array([1], np.int64)), _channel_size(b, y),
                                  b.const(np.array([1, 1], np.int64))], axis=0)
        t = b.op("Tile", [b.param((1, 1, width, width)), repeats])
        if case == "tile":
            z2 = b.op("Mul", [h, t])
        else:
            z1 = b.op("Mul", [y, t])
    elif case == "scale":  # y * y.size(1) ** -0.5, as attention scales are exported
        size = b.op("Cast", [_channel_size(b, y)], to=onnx.TensorProto.FLOAT)
        z1 = b.op("Mul", [y, b.op("Div", [b.const(np.array([1.0], np.float32)), b.op("Sqrt", [size])])])
    else:
        raise ValueError(case)
    z = b.op("Concat", [z1, z2], axis=1)
    cin = (3 if case == "constant_of_shape_coupled" else 2) * width  # inference cannot follow the size reads
    out = b.op("Conv", [z, b.param((4, cin, 1, 1), scale=1.0 / np.sqrt(cin)), b.param((4,), scale=0.1)],
               kernel_shape=[1, 1])
    b.output(b.rename(out, "output"))
    return b.build()
