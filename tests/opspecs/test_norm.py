"""Normalization rules (opspecs/norm.py): BatchNormalization, InstanceNormalization, LRN."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxprune.rules import IN, OUT
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph, prune_channels, random_feeds, run
from support.protos import initializers as _inits, node as _node


def _sandwich(mid, c=8, seed=0):
    b = GraphBuilder(seed=seed)
    x = b.conv(b.input("input", [1, 3, 8, 8]), c)
    y = mid(b, x)
    b.output(b.rename(b.conv(y, 4), "output"))
    return b.build()


def test_batchnorm_couples_all_four_parameters():
    model = _sandwich(lambda b, x: b.relu(b.bn(x)))
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("BatchNormalization_0") and group.size == 8 and group.prunable
    bn = _node(model, "BatchNormalization_0")
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    for name in bn.input[1:]:
        assert params[name] == (0,)
    assert dg.prunable_groups() == [group]
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 4, 5])
    inits = _inits(pruned)
    assert all(inits[name].shape == (5,) for name in _node(pruned, "BatchNormalization_0").input[1:])


def test_batchnorm_masks_variance_with_one():
    """The oracle's masked model must stay finite: variance is neutralised with 1, not 0."""
    from onnxprune import onnx_out
    from onnxprune.masking import mask_group

    model = _sandwich(lambda b, x: b.bn(x))
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    masked = onnx_out.to_model(mask_group(dg, group, [1, 2]))
    var = _inits(masked)[_node(model, "BatchNormalization_0").input[4]]
    np.testing.assert_array_equal(var[[1, 2]], [1.0, 1.0])
    assert all(np.isfinite(y).all() for y in run(masked, random_feeds(model)))


def test_batchnorm_on_channels_last_tensor_prunes_through_spatial_axes():
    """BN is a per-position affine map (inference): an axis other than 1 passes through."""
    def mid(b, x):
        y = b.op("Transpose", [x], perm=[0, 2, 3, 1])  # [1, 8(H), 8(W), C]
        y = b.bn(y)  # normalizes axis 1 (= H) with per-H params
        return b.op("Transpose", [y], perm=[0, 3, 1, 2])

    model = _sandwich(mid, c=6)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 6
    bn_in = next(e for e in group.ends if e.node == "BatchNormalization_0" and e.port == IN(0))
    assert bn_in.axes == (3,)
    bn = _node(model, "BatchNormalization_0")
    assert not any(e.tensor in bn.input[1:] for e in group.ends)  # BN params are per-H, untouched
    assert_all_groups_oracle(model)


def test_instance_norm_couples_scale_and_bias():
    def mid(b, x):
        c = b.shape_of(x)[1]
        scale = b.param(np.random.default_rng(1).uniform(0.5, 1.5, c).astype(np.float32))
        return b.relu(b.op("InstanceNormalization", [x, scale, b.param((c,), scale=0.1)], epsilon=1e-5))

    model = _sandwich(mid)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("InstanceNormalization_0") and group.size == 8 and group.prunable
    inorm = _node(model, "InstanceNormalization_0")
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    assert params[inorm.input[1]] == (0,) and params[inorm.input[2]] == (0,)
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [7])
    inits = _inits(pruned)
    assert [inits[n].shape for n in _node(pruned, "InstanceNormalization_0").input[1:]] == [(7,), (7,)]


def test_instance_norm_statistics_axes_are_a_barrier():
    """Channels on axis 3 of an InstanceNorm input are inside its statistics."""
    def mid(b, x):
        y = b.op("Transpose", [x], perm=[0, 2, 3, 1])  # [1, H, W, C]: InstanceNorm normalizes over W, C
        h = b.shape_of(y)[1]
        y = b.op("InstanceNormalization", [y, b.param((h,)), b.param((h,))])
        return b.op("Transpose", [y], perm=[0, 3, 1, 2])

    model = _sandwich(mid)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert not group.prunable
    assert any("InstanceNormalization" in r and "statistics" in r for r in group.blocked), group.blocked


def test_lrn_is_prunable_and_pruned_model_is_valid():
    model = _sandwich(lambda b, x: b.op("LRN", [b.relu(x)], size=3, alpha=1e-4, beta=0.75, bias=1.0))
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("LRN_0") and group.prunable and group.size == 8
    assert {e.port for e in group.ends if e.node == "LRN_0"} == {IN(0), OUT(0)}
    feeds = random_feeds(model)
    before = run(model, feeds)
    pruned = prune_channels(dg, group, [0, 2, 3])  # runs checker.full_check
    after = run(pruned, feeds)
    assert [a.shape for a in after] == [b.shape for b in before]
    assert all(np.isfinite(a).all() for a in after)
    inferred = onnx.shape_inference.infer_shapes(pruned, strict_mode=True)
    lrn_out = next(vi for vi in inferred.graph.value_info if vi.name == "LRN_0")
    assert [d.dim_value for d in lrn_out.type.tensor_type.shape.dim] == [1, 5, 8, 8]


def _channels_last_layernorm(norm_axes_from=-1):
    """ConvNeXt block: dwconv -> NHWC -> LayerNorm(C) -> Linear -> NCHW."""
    b = GraphBuilder()
    x = b.conv(b.input("input", [1, 3, 8, 8]), 8)
    t = b.op("Transpose", [x], perm=[0, 2, 3, 1])
    t = b.op("LayerNormalization", [t, b.param(np.ones(8, np.float32) + 0.1 * np.arange(8, dtype=np.float32)),
                                    b.param([8])], axis=norm_axes_from)
    t = b.op("MatMul", [t, b.param([8 if norm_axes_from == -1 else 8, 16])])
    y = b.op("Transpose", [t], perm=[0, 3, 1, 2])
    b.output(b.rename(b.conv(y, 4), "output"))
    return b.build()


def test_layernorm_prunes_its_scale_and_bias_and_is_flagged_inexact():
    model = _channels_last_layernorm()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 8
    assert dg.inexact_nodes(group) == ["LayerNormalization_0"]
    pruned = prune_channels(dg, group, [1, 4, 6])
    scale, bias = _node(model, "LayerNormalization_0").input[1:3]
    kept = [0, 2, 3, 5, 7]
    np.testing.assert_array_equal(_inits(pruned)[scale], _inits(model)[scale][kept])
    np.testing.assert_array_equal(_inits(pruned)[bias], _inits(model)[bias][kept])
    feeds = random_feeds(model)
    assert run(pruned, feeds)[0].shape == run(model, feeds)[0].shape
    # the MLP's hidden width is an ordinary, exact group
    hidden = dg.group_of("MatMul_0")
    assert hidden.prunable and not dg.inexact_nodes(hidden)


def test_layernorm_over_several_axes_is_a_barrier():
    model = _channels_last_layernorm(norm_axes_from=2)  # normalizes over W and C
    group = depgraph(model).group_of("Conv_0")
    assert not group.prunable
    assert any("LayerNormalization" in reason for reason in group.blocked)


def _group_norm_model(opset: int) -> onnx.ModelProto:
    """conv(3->12) -> GroupNormalization(4 groups) -> Relu -> conv(12->5), written by hand:
    onnx's shape inference does not expand GroupNormalization, so the builder cannot."""
    rng = np.random.default_rng(7)
    n = 4 if opset < 21 else 12
    f32 = lambda *shape, s=0.3: numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32))  # noqa
    inits = {"w0": f32(12, 3, 3, 3), "b0": f32(12), "scale": f32(n), "bias": f32(n), "w1": f32(5, 12, 1, 1)}
    inits["scale"] = numpy_helper.from_array(1 + 0.1 * numpy_helper.to_array(inits["scale"]))
    for name, tensor in inits.items():
        tensor.name = name
    nodes = [helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], name="Conv_0", pads=[1, 1, 1, 1]),
             helper.make_node("GroupNormalization", ["c0", "scale", "bias"], ["g"], name="GroupNormalization_0",
                              num_groups=4, epsilon=1e-5),
             helper.make_node("Relu", ["g"], ["r"], name="Relu_0"),
             helper.make_node("Conv", ["r", "w1"], ["output"], name="Conv_1")]
    value = lambda name, shape: helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)  # noqa
    graph = helper.make_graph(nodes, "gn", [value("input", [1, 3, 6, 6])], [value("output", [1, 5, 6, 6])],
                              list(inits.values()), value_info=[value("g", [1, 12, 6, 6]), value("r", [1, 12, 6, 6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("opset", [21])  # at 18 onnx deprecates it (the checker refuses the model)
def test_group_norm_prunes_whole_groups_exactly(opset):
    """GroupNormalization (4 groups of 3 channels): a group channel is a whole norm group, and
    removing it leaves the other groups' statistics alone, so pruning equals zeroing."""
    model = _group_norm_model(opset)
    dg = assert_all_groups_oracle(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 4 and not dg.inexact_nodes(group)
    pruned = prune_channels(dg, group, [1, 3])
    node = next(n for n in pruned.graph.node if n.op_type == "GroupNormalization")
    assert [a.i for a in node.attribute if a.name == "num_groups"] == [2]


def _rms_norm_model(op: str, opset: int) -> onnx.ModelProto:
    """x [2, 5, 6] -> MatMul (8 channels) -> RMSNorm ``op`` over the last axis -> MatMul -> output [2, 5, 4]."""
    rng = np.random.default_rng(3)
    f32 = lambda *shape: (rng.standard_normal(shape) * 0.5).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(v, k) for k, v in
             {"W1": f32(6, 8), "scale": 1 + 0.2 * f32(8), "W2": f32(8, 4)}.items()]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="proj"),
             helper.make_node(op, ["h", "scale"], ["n"], name="norm", axis=-1, epsilon=1e-5),
             helper.make_node("MatMul", ["n", "W2"], ["output"], name="head")]
    value = lambda name, shape: helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)  # noqa: E731
    graph = helper.make_graph(nodes, "rms", [value("x", [2, 5, 6])], [value("output", [2, 5, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("op, opset", [("SimplifiedLayerNormalization", 17),  # onnxruntime's, default domain
                                       ("RMSNormalization", 23)])  # ONNX's own
def test_rms_norms_load_and_prune_the_hidden_size_only_when_asked(op, opset):
    """An RMSNorm's statistics span the hidden axis: a hidden-size group (inexact), pruned with
    prune_hidden only; the pruned model passes the checker (onnxruntime's default-domain op is
    checked like a contrib op) and onnxruntime runs it with the scale pruned."""
    from onnxprune import Pruner
    from onnxprune.validate import check
    model = _rms_norm_model(op, opset)
    pruner = Pruner.from_model(model)  # the loader's checks accept it, and leave the model as it was
    assert model.graph.node[1].domain == "" and [o.domain for o in model.opset_import] == [""]
    group = pruner.group_of("proj")
    assert group.prunable and group.kind == "hidden" and pruner.depgraph.inexact_nodes(group) == ["norm"]
    assert not pruner.plan(ratio=0.5).decisions
    pruner.prune(ratio=0.5, prune_hidden=True)
    pruned = pruner.to_model()
    check(pruned)
    assert _inits(pruned)["scale"].shape == (4,)
    feeds = random_feeds(model)
    kept = pruner.kept["h"][2]
    x = feeds["x"] @ _inits(model)["W1"][:, kept]
    normed = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * _inits(model)["scale"][kept]
    np.testing.assert_allclose(run(pruned, feeds)[0], normed @ _inits(model)["W2"][kept], rtol=1e-4, atol=1e-5)


def test_an_unknown_default_domain_op_is_still_an_invalid_model():
    from onnxprune import Pruner
    from onnxprune.errors import InputError
    model = _rms_norm_model("SimplifiedLayerNormalization", 17)
    model.graph.node[1].op_type = "SimplifiedLayerNormalizationX"
    with pytest.raises(InputError, match="invalid ONNX model"):
        Pruner.from_model(model)
    assert model.graph.node[1].domain == "" and [o.domain for o in model.opset_import] == [""]


@pytest.mark.parametrize("axis, shift, expected", [(-1, True, (0, 2, 1, 2)), (2, False, (0, 2, 1, 2)),
                                                   (1, True, None)])
def test_layer_norm_declares_its_scale_and_shift_where_it_normalizes_the_last_axis_alone(axis, shift, expected):
    """Recovery re-fits a norm's scale and shift per channel (passes/norms.py): only where the
    statistics run over the last axis alone, with constant vectors (a missing bias slot can be added)."""
    from onnxprune.rules import NodeView
    from onnxprune.registry import builtin_registry
    from onnxprune.onnx_in import to_graph
    shape = (2, 3, 4)
    normalized = shape[axis % 3:]
    inits = [numpy_helper.from_array(np.ones(normalized, np.float32), "scale")] + \
        ([numpy_helper.from_array(np.zeros(normalized, np.float32), "bias")] if shift else [])
    node = helper.make_node("LayerNormalization", ["x", "scale"] + (["bias"] if shift else []), ["y"], name="ln",
                            axis=axis)
    value = lambda name: helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(shape))  # noqa: E731
    model = helper.make_model(helper.make_graph([node], "ln", [value("x")], [value("y")], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    graph = to_graph(model)
    spec = builtin_registry().lookup("", "LayerNormalization", 17)
    found = spec.norm_affine(NodeView(graph.node_by_name["ln"], graph))
    assert (None if found is None else (found.input_slot, found.axis, found.scale_slot, found.shift_slot)) == expected
