"""Tensor sources (opspecs/source.py): ConstantOfShape, Shape/Size, random ops; weights stored
as Constant nodes or as fp16 behind a Cast."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune import Pruner
from onnxprune.rules import OUT
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph, prune_channels
from support.protos import initializers as _inits, node as _node, check_runs as _check_runs


# ---- ConstantOfShape ---------------------------------------------------------------------------------
def _filled(b, shape_input):
    value = helper.make_tensor("value", TensorProto.FLOAT, [1], [0.5])
    return b.op("ConstantOfShape", [shape_input], value=value)


def test_constant_of_shape_with_constant_shape_is_rewritten():
    b = GraphBuilder(seed=1)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    y = b.op("Add", [x, _filled(b, b.const(np.array([1, 6, 4, 4], np.int64)))])
    b.output(b.rename(b.conv(y, 3), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("ConstantOfShape_0") and group.prunable and group.size == 6
    assert {e.port for e in group.ends if e.node == "ConstantOfShape_0"} == {OUT(0)}
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [1, 2])
    assert _inits(pruned)[_node(pruned, "ConstantOfShape_0").input[0]].tolist() == [1, 4, 4, 4]
    _check_runs(model, pruned)


def test_constant_of_shape_of_a_runtime_shape_is_a_barrier_until_folded():
    b = GraphBuilder(seed=2)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    y = b.op("Add", [x, _filled(b, b.op("Shape", [x]))])
    b.output(b.rename(b.conv(y, 3), "output"))
    model = b.build()
    group = depgraph(model).group_of("Conv_0")
    assert not group.prunable
    assert any("ConstantOfShape ConstantOfShape_0" in r and "run time" in r for r in group.blocked)
    # the Shape node itself is no barrier: once Pruner folds it, the group prunes
    pruner = Pruner.from_model(model)
    group = pruner.group_of("Conv_0")
    assert group.prunable and group.size == 6
    pruner.prune_group(group, [0, 5])
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    _check_runs(model, pruned)
    cos = next(n for n in pruned.graph.node if n.op_type == "ConstantOfShape")
    assert _inits(pruned)[cos.input[0]].tolist() == [1, 4, 4, 4]


def test_shape_and_size_fold_to_the_static_shape():
    from onnxprune.opspecs import default_registry
    from onnxprune import onnx_in
    from onnxprune.rules import NodeView

    b = GraphBuilder(seed=3)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    b.output(b.rename(b.op("Shape", [x], start=1, end=3), "shape"))
    b.output(b.rename(b.op("Size", [x]), "size"))
    graph = onnx_in.from_model(b.build())
    registry = default_registry()
    folded = {}
    for node in graph.nodes:
        spec = registry.lookup("", node.op_type, graph.opset)
        if spec.fold is not None:
            folded[node.op_type] = spec.fold(NodeView(node, graph)).tolist()
    assert folded == {"Shape": [6, 4], "Size": 96}


def test_random_like_op_reading_a_conv_output_is_a_barrier():
    b = GraphBuilder(seed=4)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    noise = b.op("RandomNormalLike", [x], scale=0.0)
    b.output(b.rename(b.conv(b.op("Add", [x, noise]), 3), "output"))
    dg = depgraph(b.build())
    group = dg.group_of("Conv_0")
    assert not group.prunable
    assert any("RandomNormalLike" in r and "random values" in r for r in group.blocked), group.blocked


# ---- weights as Constant nodes -------------------------------------------------------------------------
def _constant_node_model():
    b = GraphBuilder(seed=5)
    x = b.input("input", [1, 3, 4, 4])
    rng = np.random.default_rng(0)
    const = lambda shape, scale: b.op("Constant", [], value=numpy_helper.from_array(  # noqa: E731
        (rng.standard_normal(shape) * scale).astype(np.float32)))
    w0, b0, w1 = const((6, 3, 3, 3), 0.3), const((6,), 0.1), const((4, 6, 3, 3), 0.3)
    assert (w0, b0, w1) == ("Constant_0", "Constant_1", "Constant_2")
    y = b.relu(b.op("Conv", [x, w0, b0], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    b.output(b.rename(b.op("Conv", [y, w1], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "output"))
    return b.build()


def test_weights_stored_as_constant_nodes_are_prunable():
    model = _constant_node_model()
    assert not model.graph.initializer
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 6
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    assert params == {"Constant_0": (0,), "Constant_1": (0,), "Constant_2": (1,)}
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 4])
    inits = _inits(pruned)
    assert inits["Constant_0"].shape == (4, 3, 3, 3) and inits["Constant_1"].shape == (4,)
    assert inits["Constant_2"].shape == (4, 4, 3, 3)
    assert not any(n.op_type == "Constant" and n.output[0] in inits for n in pruned.graph.node)
    _check_runs(model, pruned)


# ---- fp16 weights behind a Cast ---------------------------------------------------------------------------
def _fp16_model():
    b = GraphBuilder(seed=6)
    x = b.input("input", [1, 3, 4, 4])
    rng = np.random.default_rng(1)
    w0 = b.const((rng.standard_normal((6, 3, 3, 3)) * 0.3).astype(np.float16), name="w0_fp16")
    b0 = b.const((rng.standard_normal(6) * 0.1).astype(np.float16), name="b0_fp16")
    w1 = b.const((rng.standard_normal((4, 6, 3, 3)) * 0.3).astype(np.float16), name="w1_fp16")
    f = lambda t: b.op("Cast", [t], to=TensorProto.FLOAT)  # noqa: E731
    y = b.relu(b.op("Conv", [x, f(w0), f(b0)], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    b.output(b.rename(b.op("Conv", [y, f(w1)], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "output"))
    return b.build()


def test_fp16_weights_behind_cast_are_prunable():
    model = _fp16_model()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 6
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    assert params == {"w0_fp16": (0,), "b0_fp16": (0,), "w1_fp16": (1,)}
    casts = {e.node for e in group.ends if e.kind == "op" and e.node.startswith("Cast")}
    assert len(casts) == 3
    assert_all_groups_oracle(model)


def test_fp16_initializer_is_sliced_and_stays_fp16():
    model = _fp16_model()
    dg = depgraph(model)
    pruned = prune_channels(dg, dg.group_of("Conv_0"), [1, 3, 5])
    by_name = {t.name: t for t in pruned.graph.initializer}
    assert by_name["w0_fp16"].data_type == TensorProto.FLOAT16
    assert by_name["w1_fp16"].data_type == TensorProto.FLOAT16
    inits = _inits(pruned)
    assert inits["w0_fp16"].dtype == np.float16 and inits["w0_fp16"].shape == (3, 3, 3, 3)
    assert inits["b0_fp16"].dtype == np.float16 and inits["b0_fp16"].shape == (3,)
    assert inits["w1_fp16"].shape == (4, 3, 3, 3)
    np.testing.assert_array_equal(inits["w0_fp16"], _inits(model)["w0_fp16"][[0, 2, 4]])
    _check_runs(model, pruned)
