"""The matrix view of linear layers (OpSpec.linear): unfold + matmul reproduces onnxruntime's output."""
import numpy as np
import onnx
import pytest
from onnx import helper

from onnxprune import onnx_in
from onnxprune.registry import builtin_registry
from onnxprune.rules import NodeView
from support.builder import GraphBuilder
from support.oracle import run


def _single(op, x_shape, params, opset=17, **attrs):
    """A one-node model: input x, constant params (slot order), output y; returns (model, feeds)."""
    b = GraphBuilder(seed=0, opset=opset)
    x = b.input("x", x_shape)
    names = [b.param(p) if p is not None else "" for p in params]
    b.output(b.rename(b.op(op, [x] + names, **attrs), "y"))
    feeds = {"x": np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)}
    return b.build(), feeds


def _form(model):
    graph = onnx_in.from_model(model)
    node = graph.nodes[0]
    spec = builtin_registry().lookup(node.domain, node.op_type, graph.opset)
    return spec.linear(NodeView(node, graph))


def _check_form(model, feeds, tol=1e-4):
    form = _form(model)
    assert form is not None
    x, y = feeds["x"], run(model, feeds)[0]
    cols, target = form.unfold(x), form.out_rows(y)
    m, bias = form.matrix(), form.bias()
    assert cols.shape[:2] == (form.n_rows(x.shape), form.groups) == target.shape[:1] + (form.groups,)
    assert len(form.k_channel) == len(form.k_offset) == cols.shape[2] == m.shape[2]
    got = np.einsum("rgk,gok->rgo", cols, m).reshape(len(cols), -1)
    if bias is not None:
        got = got + bias
    np.testing.assert_allclose(got, target, rtol=tol, atol=tol)
    # sampled rows are the same rows
    rows = np.random.default_rng(0).choice(len(cols), size=min(7, len(cols)), replace=False)
    np.testing.assert_array_equal(form.unfold(x, rows), cols[rows])
    return form


def _rand(*shape):
    return np.random.default_rng(2).standard_normal(shape).astype(np.float32) * 0.5


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 1]),
    dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[2, 2], strides=[1, 1], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[3, 3], auto_pad="VALID"),
    dict(kernel_shape=[1, 1]),
])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d(attrs, bias):
    k = attrs["kernel_shape"]
    model, feeds = _single("Conv", [2, 4, 7, 6], [_rand(6, 4, *k), _rand(6) if bias else None][:2 if bias else 1],
                           **attrs)
    form = _check_form(model, feeds)
    assert (form.bias() is not None) == bias and form.can_add_bias


@pytest.mark.parametrize("group,cout", [(2, 6), (4, 4), (4, 8)])  # grouped, depthwise, depthwise x2
def test_grouped_and_depthwise_conv(group, cout):
    model, feeds = _single("Conv", [1, 4, 6, 6], [_rand(cout, 4 // group, 3, 3), _rand(cout)],
                           kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group)
    form = _check_form(model, feeds)
    assert form.groups == group and form.matrix().shape == (group, cout // group, 4 // group * 9)
    # column k of a group reads channel k_channel[k] of that group at tap k_offset[k]
    assert list(form.k_channel[:10]) == [0] * 9 + ([1] if group < 4 else [])
    assert list(form.k_offset[:10]) == list(range(9)) + ([0] if group < 4 else [])


@pytest.mark.parametrize("shape,kernel", [([2, 3, 9], [3]), ([1, 2, 4, 5, 5], [3, 2, 3])])
def test_conv_1d_and_3d(shape, kernel):
    n = len(kernel)
    model, feeds = _single("Conv", shape, [_rand(4, shape[1], *kernel), _rand(4)], kernel_shape=kernel,
                           strides=[2] * n, pads=[1] * 2 * n)
    _check_form(model, feeds)


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (5,), (1, 5), ()])
def test_gemm(trans_a, trans_b, c_shape):
    x_shape = [6, 3] if trans_a else [3, 6]
    w = _rand(5, 6) if trans_b else _rand(6, 5)
    params = [w] + ([np.asarray(_rand(5).reshape(-1)[: int(np.prod(c_shape))]).reshape(c_shape)]
                    if c_shape is not None else [])
    model, feeds = _single("Gemm", x_shape, params, transA=trans_a, transB=trans_b, alpha=0.7, beta=1.3)
    form = _check_form(model, feeds)
    assert form.in_axis == (0 if trans_a else 1)


def test_matmul_with_batched_tokens():
    model, feeds = _single("MatMul", [2, 3, 6], [_rand(6, 5)])
    form = _check_form(model, feeds)
    assert form.in_axis == 2 and form.out_axis == 2 and not form.can_add_bias and form.bias() is None


def test_no_form_where_the_weight_is_not_constant():
    b = GraphBuilder(seed=0)
    x, w = b.input("x", [1, 4, 5, 5]), b.input("w", [3, 4, 3, 3])
    b.output(b.rename(b.op("Conv", [x, w], kernel_shape=[3, 3]), "y"))
    assert _form(b.build()) is None


def _store_and_run(model, feeds, matrix, bias):
    """Write a new matrix/bias through the form's ``store`` and run the result."""
    form = _form(model)
    updates = form.store(matrix, bias)
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    node = proto.graph.node[0]
    inits = {t.name: t for t in proto.graph.initializer}
    for slot, value in updates.inputs.items():
        name = node.input[slot] if slot < len(node.input) and node.input[slot] else f"new_{slot}"
        while len(node.input) <= slot:
            node.input.append("")
        node.input[slot] = name
        if name in inits:
            proto.graph.initializer.remove(inits[name])
        proto.graph.initializer.append(onnx.numpy_helper.from_array(value, name))
    for key, value in updates.attrs.items():
        for a in [a for a in node.attribute if a.name == key]:
            node.attribute.remove(a)
        node.attribute.append(helper.make_attribute(key, value))
    onnx.checker.check_model(proto, full_check=True)
    return run(proto, feeds)[0], form


@pytest.mark.parametrize("op,x_shape,params,attrs", [
    ("Conv", [1, 4, 5, 5], [_rand(6, 2, 3, 3)], dict(kernel_shape=[3, 3], group=2, pads=[1] * 4)),
    ("Gemm", [3, 6], [_rand(5, 6)], dict(transB=1, alpha=2.0, beta=0.0)),
    ("Gemm", [3, 6], [_rand(6, 5), _rand(1, 5)], dict(beta=0.5)),
])
def test_store_writes_a_new_matrix_and_adds_a_bias(op, x_shape, params, attrs):
    model, feeds = _single(op, x_shape, params, **attrs)
    form = _form(model)
    matrix = form.matrix() * 0.5
    bias = np.arange(matrix.shape[0] * matrix.shape[1], dtype=np.float32)
    y, form = _store_and_run(model, feeds, matrix, bias)
    cols = form.unfold(feeds["x"])
    expected = np.einsum("rgk,gok->rgo", cols, matrix).reshape(len(cols), -1)
    np.testing.assert_allclose(form.out_rows(y), expected + bias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bias_shape,bias_first", [((5,), True), ((5,), False), ((1, 1, 5), True)])
def test_matmul_followed_by_a_constant_add_has_that_add_as_its_bias(bias_shape, bias_first):
    """How exporters write a linear layer: MatMul then Add(bias); the form's output is the Add's."""
    b = GraphBuilder(seed=0)
    x = b.input("x", [2, 3, 6])
    y = b.op("MatMul", [x, b.param(_rand(6, 5))])
    bias = b.param(_rand(*bias_shape))
    b.output(b.rename(b.op("Add", [bias, y] if bias_first else [y, bias]), "y"))
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 6)).astype(np.float32)}
    form = _check_form(b.build(), feeds)
    assert form.output == "y" and form.can_add_bias and form.bias().shape == (5,)
    updates = form.store(form.matrix() * 2, np.arange(5.0))
    (add_name, add_updates), = updates.others.items()
    (slot, value), = add_updates.inputs.items()
    assert add_name == "Add_0" and slot == (0 if bias_first else 1) and value.shape == bias_shape
    np.testing.assert_array_equal(value.reshape(-1), np.arange(5.0))


def test_matmul_whose_output_is_also_read_elsewhere_has_no_bias():
    b = GraphBuilder(seed=0)
    x = b.input("x", [2, 3, 6])
    y = b.op("MatMul", [x, b.param(_rand(6, 5))])
    b.output([b.rename(b.op("Add", [y, b.param(_rand(5))]), "y"), b.rename(b.op("Relu", [y]), "z")])
    form = _form(b.build())
    assert form.bias() is None and not form.can_add_bias and form.output == form.view.node.outputs[0]


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[2, 2], strides=[2, 2]),  # the upsampling head of DB text detectors
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    dict(kernel_shape=[4, 3], strides=[2, 3], pads=[1, 0, 2, 1]),
    dict(kernel_shape=[3, 3], dilations=[2, 1], pads=[1, 1, 0, 1]),
    dict(kernel_shape=[3, 3]),
    dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID"),
])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose(attrs, bias):
    """Each output row holds, per tap, the input position scattered into it or zero."""
    k = attrs["kernel_shape"]
    params = [_rand(4, 3, *k)] + ([_rand(3)] if bias else [])
    model, feeds = _single("ConvTranspose", [2, 4, 5, 4], params, **attrs)
    form = _check_form(model, feeds)
    assert form.displacements is None and form.padded and form.can_add_bias
    assert form.matrix().shape == (1, 3, 4 * int(np.prod(k)))


@pytest.mark.parametrize("group,cout", [(2, 6), (4, 4)])  # grouped, depthwise
def test_grouped_conv_transpose(group, cout):
    model, feeds = _single("ConvTranspose", [1, 4, 3, 5], [_rand(4, cout // group, 3, 2), _rand(cout)],
                           kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 0, 1], group=group)
    form = _check_form(model, feeds)
    assert form.groups == group and form.matrix().shape == (group, cout // group, 4 // group * 6)


@pytest.mark.parametrize("shape,kernel", [([2, 3, 5], [3]), ([1, 2, 3, 2, 3], [2, 3, 2])])
def test_conv_transpose_1d_and_3d(shape, kernel):
    n = len(kernel)
    model, feeds = _single("ConvTranspose", shape, [_rand(shape[1], 4, *kernel), _rand(4)], kernel_shape=kernel,
                           strides=[2] * n, pads=[1] * n + [0] * n)
    _check_form(model, feeds)


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[2, 2], strides=[2, 2], output_shape=[8, 8]),
                                   dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")])
def test_conv_transpose_without_explicit_padding_has_no_form(attrs):
    model, _ = _single("ConvTranspose", [1, 4, 4, 4], [_rand(4, 3, *attrs["kernel_shape"])], **attrs)
    assert _form(model) is None


def test_conv_transpose_store_writes_a_new_matrix_and_adds_a_bias():
    model, feeds = _single("ConvTranspose", [1, 4, 3, 3], [_rand(4, 3, 3, 2)], kernel_shape=[3, 2],
                           strides=[2, 2], pads=[1, 0, 1, 1], group=2)
    form = _form(model)
    matrix = form.matrix() * np.linspace(0.5, 2.0, form.matrix().size).reshape(form.matrix().shape)
    bias = np.arange(6, dtype=np.float32)
    y, form = _store_and_run(model, feeds, matrix.astype(np.float32), bias)
    cols = form.unfold(feeds["x"])
    expected = np.einsum("rgk,gok->rgo", cols, matrix).reshape(len(cols), -1)
    np.testing.assert_allclose(form.out_rows(y), expected + bias, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        form.store(matrix, None, geometry=object())
