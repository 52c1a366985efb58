"""Two convolutions in a row composed into one (kxk then kxk: one (k1+k2-1)x(k1+k2-1)):
exact through onnxruntime with random weights and biases wherever it merges, refused with a
reason where the second pads (its zeros are not the first's values beyond its border) or
where the merged kernel would cost more multiply-adds."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from support.builder import GraphBuilder
from support.fusion import assert_exact, fuse, ops


def _weight_dims(model) -> list[tuple[int, ...]]:
    """The convolutions' weight shapes, in node order."""
    dims = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return [dims[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]


def _attr(model, name):
    (conv,) = [n for n in model.graph.node if n.op_type == "Conv"]
    return next(list(a.ints) for a in conv.attribute if a.name == name)


# (k1, stride1, pad1, dilation1, k2, stride2, dilation2): a wide first conv, a narrow second, so the
# merged kernel costs less; odd input sizes so that the strides floor
GEOMETRIES = [(3, 1, 1, 1, 3, 1, 1), (3, 1, 0, 1, 3, 2, 1), (3, 2, 1, 1, 3, 1, 1), (5, 1, 2, 1, 3, 1, 1),
              (3, 1, 1, 2, 3, 1, 1), (3, 1, 1, 1, 2, 2, 1), (3, 1, 1, 1, 3, 1, 2), (3, 2, 1, 1, 1, 2, 1),
              (1, 1, 0, 1, 3, 2, 1)]


@pytest.mark.parametrize("k1,s1,p1,d1,k2,s2,d2", GEOMETRIES)
def test_two_convolutions_compose_exactly(k1, s1, p1, d1, k2, s2, d2):
    b = GraphBuilder(seed=k1 * 7 + s1 + p1 + k2 * 3 + s2 + d1 + d2)
    x = b.input("x", [2, 3, 13, 11])
    first = b.conv(x, 24, k=k1, stride=s1, pad=p1, dilation=d1)
    b.output(b.rename(b.conv(first, 2, k=k2, stride=s2, pad=0, dilation=d2), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv"], result.refused
    assert_exact(model, fused, rtol=1e-4, atol=1e-4)
    span = (k2 - 1) * d2 * s1 + (k1 - 1) * d1 + 1
    assert _weight_dims(fused) == [(2, 3, span, span)]
    assert _attr(fused, "strides") == [s1 * s2] * 2 and _attr(fused, "pads") == [p1] * 4
    (into,) = [n.name for n in fused.graph.node]
    assert result.edits.merged_nodes == {into: tuple(n.name for n in model.graph.node)}
    assert result.edits.tensors[first] is None and result.edits.tensors["y"] == "y"


def test_three_by_three_twice_is_one_five_by_five_with_the_first_padding():
    b = GraphBuilder(seed=31)
    x = b.input("x", [1, 3, 9, 9])
    b.output(b.rename(b.conv(b.conv(x, 16, k=3, pad=1), 4, k=3, pad=0), "y"))
    model = b.build()
    fused, _ = fuse(model)
    assert _weight_dims(fused) == [(4, 3, 5, 5)] and _attr(fused, "pads") == [1, 1, 1, 1]
    assert_exact(model, fused, rtol=1e-4, atol=1e-4)


def test_asymmetric_padding_of_the_first_is_kept():
    b = GraphBuilder(seed=32)
    x = b.input("x", [1, 3, 10, 9])
    w1, w2 = b.param((16, 3, 3, 3), scale=0.3), b.param((2, 16, 3, 3), scale=0.3)
    first = b.op("Conv", [x, w1, b.param((16,))], kernel_shape=[3, 3], pads=[0, 2, 1, 0], strides=[2, 1])
    b.output(b.rename(b.op("Conv", [first, w2, b.param((2,))], kernel_shape=[3, 3]), "y"))
    model = b.build()
    fused, _ = fuse(model)
    assert ops(fused) == ["Conv"] and _attr(fused, "pads") == [0, 2, 1, 0]
    assert_exact(model, fused, rtol=1e-4, atol=1e-4)


def test_a_padded_second_conv_is_refused_with_its_reason():
    b = GraphBuilder(seed=33)
    x = b.input("x", [1, 3, 9, 9])
    b.output(b.rename(b.conv(b.conv(x, 16, k=3, pad=1), 4, k=3, pad=1), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv", "Conv"]
    assert any("pads its input with zeros" in r for r in result.refused), result.refused


def test_equal_widths_three_by_three_twice_is_refused_for_cost():
    b = GraphBuilder(seed=34)
    x = b.input("x", [1, 8, 12, 12])
    b.output(b.rename(b.conv(b.conv(x, 8, k=3, pad=1), 8, k=3, pad=0), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv", "Conv"]
    assert any("would cost more multiply-adds" in r for r in result.refused), result.refused


@pytest.mark.parametrize("group", [4, 2])
def test_grouped_then_grouped_compose_group_by_group(group):
    b = GraphBuilder(seed=35 + group)
    x = b.input("x", [2, 8, 11, 11])
    first = b.conv(x, 8, k=3, pad=1, group=group)
    second = b.conv(first, 8, k=2, stride=2, pad=0, group=group)  # a learned 2x2 pooling after it
    b.output(b.rename(b.conv(b.relu(second), 8, k=1, group=group), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv", "Relu", "Conv"], result.refused
    assert _weight_dims(fused)[0] == (8, 8 // group, 4, 4)
    assert_exact(model, fused, rtol=1e-4, atol=1e-4)


def test_depthwise_then_depthwise_three_by_three_is_refused_for_cost():
    b = GraphBuilder(seed=37)
    x = b.input("x", [1, 8, 10, 10])
    b.output(b.rename(b.conv(b.conv(x, 8, k=3, pad=1, group=8), 8, k=3, pad=0, group=8), "y"))
    fused, result = fuse(b.build())
    assert ops(fused) == ["Conv", "Conv"]
    assert any("would cost more multiply-adds" in r for r in result.refused), result.refused


def test_a_fused_model_that_merged_kernels_reloads_and_refuses_nothing_new():
    """The merged conv's attributes are complete: onnx's checker with shapes, and fusing again
    changes nothing."""
    b = GraphBuilder(seed=38)
    x = b.input("x", [1, 3, 9, 9])
    b.output(b.rename(b.conv(b.conv(x, 16, k=3, pad=1, dilation=1), 2, k=3, pad=0), "y"))
    fused, _ = fuse(b.build())
    onnx.checker.check_model(onnx.shape_inference.infer_shapes(fused), full_check=True)
    again, result = fuse(fused)
    assert result.changed == 0 and ops(again) == ["Conv"]
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(fused.graph.initializer[0]),
                                  onnx.numpy_helper.to_array(again.graph.initializer[0]))
