"""apply_plan: a new graph with channels removed; shared constants, shapes, the input untouched."""
import copy

import numpy as np
import onnx
from onnx import shape_inference

from onnxprune import onnx_in, onnx_out
from onnxprune.depgraph import DependencyGraph
from onnxprune.plan import GroupDecision, Plan, make_plan
from onnxprune.rewrite import apply_plan, kept_per_axis, removed_per_dim
from support.builder import GraphBuilder
from support.oracle import assert_group_oracle, random_feeds, run
from support.small_models import conv_chain


def decision(dg, node, channels):
    group = dg.group_of(node)
    return GroupDecision(group.id, str(group.root), group.size, tuple(channels))


def snapshot(graph):
    return (copy.deepcopy([(n.name, n.op_type, list(n.inputs), list(n.outputs), dict(n.attrs)) for n in graph.nodes]),
            {k: v.copy() for k, v in graph.params.items()},
            copy.deepcopy(graph.values), copy.deepcopy(graph.declared),
            copy.deepcopy(graph.inputs), copy.deepcopy(graph.outputs))


def same(a, b):
    nodes_a, params_a, *rest_a = a
    nodes_b, params_b, *rest_b = b
    return (nodes_a == nodes_b and rest_a == rest_b and params_a.keys() == params_b.keys()
            and all(params_a[k].shape == params_b[k].shape and np.array_equal(params_a[k], params_b[k])
                    for k in params_a))


def test_apply_plan_does_not_mutate_its_input():
    dg = DependencyGraph(onnx_in.from_model(conv_chain()))
    before = snapshot(dg.graph)
    pruned = apply_plan(dg, make_plan(dg, ratio=0.5))
    assert same(snapshot(dg.graph), before)
    assert not same(snapshot(pruned), before)
    assert pruned is not dg.graph and pruned.nodes is not dg.graph.nodes
    # the dependency graph still describes the original and can plan again
    assert dg.group_of("Conv_0").size == 8
    apply_plan(dg, make_plan(dg, ratio=0.25))
    assert same(snapshot(dg.graph), before)


def test_kept_weights_are_the_original_rows_and_columns():
    dg = DependencyGraph(onnx_in.from_model(conv_chain()))
    pruned = apply_plan(dg, Plan((decision(dg, "Conv_0", [1, 4, 6]),)))
    keep = [0, 2, 3, 5, 7]
    nodes = dg.graph.node_by_name
    w0, b0, w1 = nodes["Conv_0"].inputs[1], nodes["Conv_0"].inputs[2], nodes["Conv_1"].inputs[1]
    np.testing.assert_array_equal(pruned.params[w0], dg.graph.params[w0][keep])
    np.testing.assert_array_equal(pruned.params[b0], dg.graph.params[b0][keep])
    np.testing.assert_array_equal(pruned.params[w1], dg.graph.params[w1][:, keep])
    for name in nodes["BatchNormalization_0"].inputs[1:]:
        np.testing.assert_array_equal(pruned.params[name], dg.graph.params[name][keep])
    gemm_w = nodes["Gemm_0"].inputs[1]
    assert pruned.params[gemm_w] is dg.graph.params[gemm_w]  # untouched arrays are shared, not copied


def test_removed_and_kept_indices_per_tensor():
    dg = DependencyGraph(onnx_in.from_model(conv_chain()))
    plan = Plan((decision(dg, "Conv_0", [1, 4, 6]),))
    removed = removed_per_dim(dg, plan)
    assert removed[("Conv_0", (1,))].tolist() == [1, 4, 6]
    w1 = dg.graph.node_by_name["Conv_1"].inputs[1]
    assert removed[(w1, (1,))].tolist() == [1, 4, 6]
    kept = kept_per_axis(dg.graph, removed)
    assert list(kept[w1]) == [1] and kept[w1][1].tolist() == [0, 2, 3, 5, 7]
    assert list(kept["Conv_0"]) == [1]


def shared_reshape_model():
    """Two branches Conv -> Relu -> Reshape(flat_shape) -> Reshape(image_shape), concatenated."""
    b = GraphBuilder(seed=6)
    x = b.input("input", [1, 3, 4, 4])
    s1 = b.const(np.array([1, 8, 16], np.int64), name="flat_shape")
    s2 = b.const(np.array([1, 8, 4, 4], np.int64), name="image_shape")
    branches = []
    for _ in range(2):
        y = b.relu(b.conv(x, 8))
        branches.append(b.op("Reshape", [b.op("Reshape", [y, s1]), s2]))
    b.output(b.rename(b.conv(b.op("Concat", branches, axis=1), 2, k=1), "output"))
    return b.build()


def test_shared_shape_constant_gets_a_fresh_name_when_one_user_changes():
    model = shared_reshape_model()
    dg = DependencyGraph(onnx_in.from_model(model))
    plan = Plan((decision(dg, "Conv_0", [0, 2, 5]),))
    pruned = apply_plan(dg, plan)
    nodes = {n.name: n for n in pruned.nodes}
    # branch 0 reads new constants under new names...
    for node, old, value in (("Reshape_0", "flat_shape", [1, 5, 16]), ("Reshape_1", "image_shape", [1, 5, 4, 4])):
        name = nodes[node].inputs[1]
        assert name != old and name not in dg.graph.params
        assert pruned.params[name].tolist() == value and pruned.params[name].dtype == np.int64
    # ...and branch 1 still reads the untouched originals
    assert nodes["Reshape_2"].inputs[1] == "flat_shape" and nodes["Reshape_3"].inputs[1] == "image_shape"
    assert pruned.params["flat_shape"].tolist() == [1, 8, 16]
    assert pruned.params["image_shape"].tolist() == [1, 8, 4, 4]
    out = onnx_out.to_model(pruned)
    onnx.checker.check_model(out, full_check=True)
    assert_group_oracle(dg, dg.group_of("Conv_0"), [0, 2, 5], random_feeds(model))


def test_both_users_changing_differently_get_distinct_constants():
    model = shared_reshape_model()
    dg = DependencyGraph(onnx_in.from_model(model))
    pruned = apply_plan(dg, Plan((decision(dg, "Conv_0", [0]), decision(dg, "Conv_1", [1, 2]))))
    nodes = {n.name: n for n in pruned.nodes}
    assert pruned.params[nodes["Reshape_0"].inputs[1]].tolist() == [1, 7, 16]
    assert pruned.params[nodes["Reshape_2"].inputs[1]].tolist() == [1, 6, 16]
    out = onnx_out.to_model(pruned)
    assert "flat_shape" not in {t.name for t in out.graph.initializer}  # no longer referenced
    feeds = random_feeds(model)
    assert run(out, feeds)[0].shape == run(model, feeds)[0].shape


def test_an_unshared_constant_is_rewritten_in_place():
    b = GraphBuilder(seed=7)
    y = b.relu(b.conv(b.input("input", [1, 3, 4, 4]), 6))
    y = b.op("Reshape", [b.op("Reshape", [y, b.const(np.array([1, 6, 16], np.int64), name="only_flat")]),
                         b.const(np.array([1, 6, 4, 4], np.int64), name="only_image")])
    b.output(b.rename(b.conv(y, 2, k=1), "output"))
    dg = DependencyGraph(onnx_in.from_model(b.build()))
    pruned = apply_plan(dg, Plan((decision(dg, "Conv_0", [3]),)))
    assert [n.inputs[1] for n in pruned.nodes if n.op_type == "Reshape"] == ["only_flat", "only_image"]
    assert pruned.params["only_flat"].tolist() == [1, 5, 16]
    assert dg.graph.params["only_flat"].tolist() == [1, 6, 16]  # the input graph keeps its value


def test_value_info_shapes_follow_the_pruning():
    model = shape_inference.infer_shapes(conv_chain())  # every intermediate tensor declared
    assert {vi.name for vi in model.graph.value_info} >= {"Conv_0", "Relu_0", "Conv_1"}
    dg = DependencyGraph(onnx_in.from_model(model))
    pruned = apply_plan(dg, Plan((decision(dg, "Conv_0", [0, 1, 2]), decision(dg, "Conv_1", [5]))))
    assert pruned.values["Conv_0"].shape == (1, 5, 8, 8)
    assert pruned.values["Relu_0"].shape == (1, 5, 8, 8)
    assert pruned.values["Conv_1"].shape == (1, 5, 8, 8)
    assert pruned.values["output"].shape == (1, 10)
    assert dg.graph.values["Conv_0"].shape == (1, 8, 8, 8)
    out = onnx_out.to_model(pruned)
    declared = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in out.graph.value_info}
    assert declared["Conv_0"] == [1, 5, 8, 8] and declared["Flatten_0"] == [1, 5]
    onnx.checker.check_model(out, full_check=True)  # strict inference agrees with every declared shape
    feeds = random_feeds(model)
    assert run(out, feeds)[0].shape == (1, 10)
