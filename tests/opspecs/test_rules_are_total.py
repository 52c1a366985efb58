"""Every rule is total on the shapes real exports give it (issue 17).

A rule asked about any axes of any port of a node, with the shapes that
shape inference gives the committed exports (both torch exporters, the
model-zoo style models) and hand-made corner cases (0-d and 1-d shape
tensors, -1 and 0 in Reshape targets, rank changes, scalar indices), answers
with coupled axes or a Barrier with a reason: it never raises, and never
couples to no axis or to an axis the other tensor lacks (the engine reads
such links as the whole tensor).
"""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune import onnx_in
from onnxprune.rules import IN, OUT, Barrier, Couple, Mark, NodeView
from onnxprune.opspecs import default_registry
from support.exported import MODELS_DIR

REALWORLD_DIR = os.path.join(MODELS_DIR, "realworld")
FILES = sorted(os.path.join(MODELS_DIR, f) for f in os.listdir(MODELS_DIR) if f.endswith(".onnx")) + sorted(
    os.path.join(REALWORLD_DIR, f) for f in os.listdir(REALWORLD_DIR)
    if f.endswith(".onnx") and not f.startswith("scan_opset8"))  # refused at load, on purpose


def _queries(rank: int):
    """Each axis alone, each consecutive pair, all axes (a flattened channel block)."""
    singles = [(a,) for a in range(rank)]
    pairs = [(a, a + 1) for a in range(rank - 1)]
    return singles + pairs + ([tuple(range(rank))] if rank > 2 else [])


def check_every_rule(graph) -> int:
    """Ask every rule of ``graph`` about every port and axis set; return how many answers were checked."""
    registry, asked = default_registry(), 0
    for node in graph.nodes:
        spec = registry.lookup(node.domain, node.op_type, graph.meta.opsets.get(node.domain, graph.opset))
        if spec is None:
            continue
        view = NodeView(node, graph)
        ports = [IN(i) for i, name in enumerate(node.inputs) if name] + \
                [OUT(i) for i, name in enumerate(node.outputs) if name]
        for port in ports:
            rank = view.rank(port)
            if rank is None:
                continue
            for axes in _queries(rank):
                try:
                    answer = spec.couple(view, port, axes)
                except Exception as exc:  # noqa: BLE001 - the point: name the node, port and axes
                    raise AssertionError(f"{node.op_type} {node.name} {port} axes {axes} shape "
                                         f"{view.shape(port)}: {type(exc).__name__}: {exc}") from exc
                asked += 1
                where = f"{node.op_type} {node.name} {port} axes {axes}"
                if isinstance(answer, Barrier):
                    assert answer.reason, where
                    continue
                assert isinstance(answer, list), where
                for link in answer:
                    if isinstance(link, Mark):
                        continue
                    assert isinstance(link, Couple), where
                    other = view.rank(link.port)
                    assert link.axes, f"{where}: coupled to no axis of {link.port}"
                    if other is not None:
                        assert all(-other <= a < other for a in link.axes), f"{where}: {link} (rank {other})"
    return asked


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f)[:-5] for f in FILES])
def test_every_rule_answers_every_axis_of_real_exports(path):
    model = onnx.load(path)
    onnx_in.check_supported(model, path)  # opsets 7/8 upgraded first, as the CLI does
    assert check_every_rule(onnx_in.from_model(model)) > 0


# ---- hand-made corner cases ----------------------------------------------------------------------------
F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _model(nodes, inputs, outputs, inits, opset=18):
    """The outputs get the shapes onnx infers for them."""
    graph = helper.make_graph(nodes, "corner", inputs, [], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.value_info}
    model.graph.output.extend(inferred[name] for name in outputs)
    onnx.checker.check_model(model, full_check=True)
    return model


def _i64(name, values):
    return onnx.numpy_helper.from_array(np.asarray(values, np.int64), name)


def corner_cases():
    x4 = helper.make_tensor_value_info("x", F, [2, 6, 4, 4])
    vec = helper.make_tensor_value_info("v", F, [6])
    scalar = helper.make_tensor_value_info("s", F, [])
    out = str
    return {
        # -1 and 0 in Reshape targets, with and without allowzero; a target that folds heads into the batch
        "reshape_minus1_zero": _model(
            [helper.make_node("Reshape", ["x", "t1"], ["a"]),
             helper.make_node("Reshape", ["x", "t2"], ["b"], allowzero=0),
             helper.make_node("Reshape", ["x", "t3"], ["c"]),
             helper.make_node("Reshape", ["x", "t4"], ["d"])],
            [x4], [out("a"), out("b"), out("c"), out("d")],
            [_i64("t1", [0, -1]), _i64("t2", [0, 0, -1]), _i64("t3", [-1]), _i64("t4", [4, 3, 16])]),
        # 0-d and 1-d tensors through rank-changing ops
        "rank_changes": _model(
            [helper.make_node("Unsqueeze", ["s", "ax0"], ["s1"]),
             helper.make_node("Squeeze", ["s1", "ax0"], ["s0"]),
             helper.make_node("Reshape", ["v", "t_scalar_ok"], ["v2"]),
             helper.make_node("Reshape", ["s", "t_one"], ["s_vec"]),
             helper.make_node("Gather", ["v", "idx0"], ["picked"], axis=0),
             helper.make_node("Flatten", ["x"], ["flat0"], axis=0),
             helper.make_node("Flatten", ["x"], ["flat3"], axis=3),
             helper.make_node("Squeeze", ["x1"], ["x1s"]),
             helper.make_node("Expand", ["s", "shape4"], ["s_big"]),
             helper.make_node("Tile", ["x", "reps"], ["tiled"]),
             helper.make_node("Transpose", ["s"], ["s_t"])],
            [x4, vec, scalar, helper.make_tensor_value_info("x1", F, [1, 6, 1, 4])],
            [out(n) for n in ("s0", "v2", "s_vec", "picked", "flat0", "flat3", "x1s", "s_big", "tiled", "s_t")],
            [_i64("ax0", [0]), _i64("t_scalar_ok", [2, 3]), _i64("t_one", [1]), _i64("idx0", 2),
             _i64("shape4", [2, 6, 4, 4]), _i64("reps", [1, 2, 1, 1])]),
    }


@pytest.mark.parametrize("name", sorted(corner_cases()))
def test_every_rule_answers_corner_shapes(name):
    graph = onnx_in.from_model(corner_cases()[name])
    assert check_every_rule(graph) > 0


def test_a_reshape_that_folds_channels_into_the_batch_is_a_barrier_with_its_reason():
    """torch's nn.MultiheadAttention: (seq, batch, 32) -> (seq, batch*4, 8) with a symbolic batch."""
    from support.exported import by_name
    from onnxprune.depgraph import DependencyGraph
    dg = DependencyGraph(onnx_in.from_model(by_name("tv_vit_dynamo").load()))
    blocked = [g for g in dg.groups if not g.prunable and g.size == 32]
    assert blocked, [g.describe() for g in dg.groups]
    assert all(any("run-time size (4*batch)" in r for r in g.blocked) for g in blocked)
