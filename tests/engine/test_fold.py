"""Folding static shape arithmetic so run-time Slice bounds become rewritable constants."""
import numpy as np
import onnx

from onnxprune import Pruner, onnx_in
from onnxprune.passes.fold_shapes import MAX_FOLDED_ELEMENTS, fold_shape_arithmetic, is_static
from onnxprune.opspecs import default_registry
from support.builder import GraphBuilder
from support.oracle import assert_group_oracle, random_feeds, run
from support.small_models import slice_halves

SHAPE_CHAIN = {"Shape", "Gather", "Div", "Mul"}


def ops(graph):
    return [n.op_type for n in graph.nodes]


def test_static_chain_is_folded_into_constants():
    graph = onnx_in.from_model(slice_halves())
    assert is_static(graph)
    folded, count = fold_shape_arithmetic(graph, default_registry())
    assert count == 4
    assert not SHAPE_CHAIN & set(ops(folded))
    assert ops(folded) == ["Conv", "Relu", "Slice", "Slice", "Concat", "Conv"]
    slices = [n for n in folded.nodes if n.op_type == "Slice"]
    assert folded.params[slices[0].inputs[2]].tolist() == [4]   # half = 8 / 2
    assert folded.params[slices[1].inputs[1]].tolist() == [4]
    assert folded.params[slices[1].inputs[2]].tolist() == [8]   # half * 2
    assert SHAPE_CHAIN <= set(ops(graph))  # the input graph is not modified


def test_folding_makes_the_slices_prunable_and_the_prune_exact():
    model = slice_halves()
    unfolded = Pruner(onnx_in.from_model(model))
    assert unfolded.prunable_groups() == []
    assert any("computed at run time" in r for r in unfolded.groups[0].blocked)

    pruner = Pruner.from_model(model)
    groups = pruner.prunable_groups()
    assert [g.size for g in groups] == [4, 4]  # the two halves of Conv_0 prune independently
    feeds = random_feeds(model)
    assert_group_oracle(pruner.depgraph, groups[1], [0, 3], feeds)

    pruner.prune(ratio=0.5)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    w = {t.name: t for t in pruned.graph.initializer}[pruned.graph.node[0].input[1]]
    assert list(w.dims)[0] == 4
    slices = [n for n in pruned.graph.node if n.op_type == "Slice"]
    bounds = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in pruned.graph.initializer}
    assert [bounds[slices[0].input[2]], bounds[slices[1].input[1]], bounds[slices[1].input[2]]] == [[2], [2], [4]]
    assert run(pruned, feeds)[0].shape == run(model, feeds)[0].shape


def test_dynamic_batch_models_are_not_folded_but_their_static_sizes_are_pinned():
    """With a symbolic batch nothing folds; the Slice bounds read only the static channel count, so the
    pinning pass (opspecs/static_targets.py) makes them constants: the halves prune as in the static model."""
    model = slice_halves(batch="N")
    graph = onnx_in.from_model(model)
    assert not is_static(graph)
    same, count = fold_shape_arithmetic(graph, default_registry())
    assert count == 0 and same is graph
    for shapes in (None, {"input": [1, 3, 8, 8]}):  # fixing the shape for analysis does not fold either
        pruner = Pruner.from_model(model, shapes)
        assert not SHAPE_CHAIN & set(ops(pruner.graph))  # pinned, then unused: dropped
        groups = pruner.prunable_groups()
        assert [g.size for g in groups] == [4, 4]
        feeds = {"input": np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)}
        assert_group_oracle(pruner.depgraph, groups[1], [0, 3], feeds)


def test_float_arithmetic_and_graph_outputs_are_never_folded():
    b = GraphBuilder(seed=0)
    x = b.input("input", [1, 2, 3, 3])
    scaled = b.op("Mul", [b.const(np.full([2, 1, 1], 2.0, np.float32)), b.const(np.ones([2, 1, 1], np.float32))])
    b.output(b.rename(b.op("Mul", [x, scaled]), "output"))
    b.output(b.rename(b.op("Shape", [x]), "shape_out"))  # a graph output must stay a node output
    graph = onnx_in.from_model(b.build())
    folded, count = fold_shape_arithmetic(graph, default_registry())
    assert count == 0 and ops(folded) == ["Mul", "Mul", "Shape"]


def test_large_integer_results_are_not_folded():
    b = GraphBuilder(seed=0)
    x = b.input("input", [1, 2])
    side = int(np.sqrt(MAX_FOLDED_ELEMENTS)) + 1
    big = b.op("ConstantOfShape", [b.const(np.array([side, side], np.int64))],
               value=onnx.helper.make_tensor("v", onnx.TensorProto.INT64, [1], [1]))
    small = b.op("ConstantOfShape", [b.const(np.array([2, 2], np.int64))],
                 value=onnx.helper.make_tensor("v", onnx.TensorProto.INT64, [1], [1]))
    total = b.op("Add", [b.op("ReduceSum", [big], keepdims=0), b.op("ReduceSum", [small], keepdims=0)])
    b.output(b.rename(b.op("Add", [x, b.op("Cast", [total], to=onnx.TensorProto.FLOAT)]), "output"))
    graph = onnx_in.from_model(b.build())
    folded, count = fold_shape_arithmetic(graph, default_registry())
    # the small one and its ReduceSum fold; the big one (and all that depends on it) stays
    assert count == 2
    assert [n.name for n in folded.nodes] == ["ConstantOfShape_0", "ReduceSum_0", "Add_0", "Cast_0", "Add_1"]
    assert all(v.size <= MAX_FOLDED_ELEMENTS for v in folded.params.values())


def test_fold_runs_as_a_pass_and_reports_what_it_changed():
    from onnxprune.passes import run_passes
    from onnxprune.passes.fold_shapes import FoldShapeArithmetic
    graph = onnx_in.from_model(slice_halves())
    messages = []
    folded, results = run_passes(graph, [FoldShapeArithmetic(default_registry())], progress=messages.append)
    assert [r.name for r in results] == ["fold shape arithmetic"]
    assert results[0].changed > 0 and results[0].graph is folded
    assert not SHAPE_CHAIN & set(ops(folded)) and SHAPE_CHAIN & set(ops(graph))  # input graph untouched
    assert messages == [f"fold shape arithmetic: {results[0].changed} changed"]


def test_repeated_shape_arithmetic_is_evaluated_once_and_folds_the_same(monkeypatch):
    """A Transformer repeats the same shape arithmetic in every block: each distinct evaluation (operator,
    attributes, input values) runs once per folding, and the folded graph is the one evaluating every
    node gives."""
    from onnxprune.passes import fold_shapes
    from support.exported import by_name
    model = by_name("vit_ts").load()
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for vi in fixed.graph.input:  # static batch: the shape arithmetic folds
        vi.type.tensor_type.shape.dim[0].Clear()
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    graph = onnx_in.from_model(fixed)
    evaluations = []
    real = fold_shapes._evaluate_proto
    monkeypatch.setattr(fold_shapes, "_evaluate_proto", lambda *a: evaluations.append(a[0].name) or real(*a))
    remembered, count = fold_shape_arithmetic(graph, default_registry())
    runs = len(evaluations)
    monkeypatch.setattr(fold_shapes, "MAX_REMEMBERED_ELEMENTS", -1)  # nothing remembered
    evaluations.clear()
    every, count_every = fold_shape_arithmetic(graph, default_registry())
    assert count == count_every > 0 and runs < len(evaluations)
    assert [n.name for n in remembered.nodes] == [n.name for n in every.nodes]
    assert set(remembered.params) == set(every.params)
    for name, value in every.params.items():
        got = remembered.params[name]
        assert got.dtype == value.dtype and np.array_equal(got, value), name
