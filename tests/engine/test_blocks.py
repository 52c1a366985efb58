"""Residual blocks found from the graph, and their removal: equal to the original with that
branch's output multiplied by zero (onnxruntime judges)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxprune import Pruner, onnx_in
from onnxprune.blocks import find_blocks
from onnxprune.errors import PlanError
from onnxprune.recipe import Recipe
from onnxprune.registry import builtin_registry
from support.architectures import ARCHITECTURES, _cbr, _head
from support.builder import GraphBuilder
from support.exported import by_name
from support.oracle import random_feeds, run

PARALLEL = "neither addend depends on the other"


def discover(model: onnx.ModelProto):
    return find_blocks(onnx_in.from_model(model), builtin_registry())


def zero_branch(model: onnx.ModelProto, join: str, *residuals: str) -> onnx.ModelProto:
    """The original with the join's addends ``residuals`` multiplied by zero."""
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model)
    graph = zeroed.graph
    graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "zero__oracle"))
    node = next(n for n in graph.node if n.name == join)
    for k, residual in enumerate(residuals):
        slot = list(node.input).index(residual)
        node.input[slot] = f"zeroed{k}__oracle"
        position = list(graph.node).index(node)
        graph.node.insert(position, helper.make_node("Mul", [residual, "zero__oracle"], [f"zeroed{k}__oracle"],
                                                     name=f"zero{k}__oracle_mul"))
    return zeroed


def assert_removal_is_zeroing(model: onnx.ModelProto, feeds_list, rtol=1e-4, atol=1e-5) -> int:
    """Every block of ``model`` removed alone == the original with that branch zeroed."""
    blocks = discover(model).blocks
    for block in blocks:
        pruner = Pruner.from_model(model)
        pruner.remove_block_keys([block.key])
        removed = pruner.to_model()
        onnx.checker.check_model(removed, full_check=True)
        assert len(removed.graph.node) < len(model.graph.node)
        zeroed = zero_branch(model, block.join, block.residual)
        for feeds in feeds_list:
            expected, got = run(zeroed, feeds), run(removed, feeds)
            assert [e.shape for e in expected] == [g.shape for g in got]
            for e, g in zip(expected, got):
                np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"block at {block.join}")
            original = run(model, feeds)
            assert any(not np.allclose(o, g, atol=1e-6) for o, g in zip(original, got)), "removal changed nothing"
    return len(blocks)


# ----------------------------------------------------------------------------- discovery
def test_resnet_basic_identity_blocks_and_the_projection_join():
    found = discover(ARCHITECTURES["resnet_basic"]())
    assert [b.join for b in found.blocks] == ["Add_0", "Add_1", "Add_3"]
    assert all(b.layers == 2 and len(b.nodes) == 5 for b in found.blocks)  # conv-bn-relu-conv-bn
    (refused,) = found.refused
    assert refused.join == "Add_2" and PARALLEL in refused.reason  # the strided block's projection shortcut


def test_bottleneck_only_identity_shortcuts_are_removable():
    found = discover(ARCHITECTURES["resnet_bottleneck"]())
    (block,) = found.blocks
    assert block.join == "Add_1" and block.layers == 3 and len(block.nodes) == 8
    assert sorted(r.join for r in found.refused) == ["Add_0", "Add_2"]
    assert all(PARALLEL in r.reason for r in found.refused)


def test_mobilenetv2_only_residual_inverted_blocks():
    model = ARCHITECTURES["mobilenetv2"]()
    found = discover(model)
    assert len(found.blocks) == 2 and not found.refused  # the three non-residual blocks have no join
    graph = onnx_in.from_model(model)
    for block in found.blocks:
        assert block.layers == 3  # expand, depthwise, project
        assert graph.shape(block.skip) == graph.shape(block.output)


def test_densenet_has_none_and_says_why():
    found = discover(ARCHITECTURES["densenet"]())
    assert not found.blocks and "no residual joins" in found.why_none()


def test_yolo_neck_finds_the_c2f_shortcut_bottlenecks_only():
    model = ARCHITECTURES["yolo_neck"]()
    found = discover(model)
    # C2f with shortcut: backbone 1 + 2 + 1 + 1 bottlenecks; the neck's C2f (shortcut=False) none
    assert len(found.blocks) == 5 and not found.refused
    graph = onnx_in.from_model(model)
    producers = {b.skip: graph.producers[b.skip][0].op_type for b in found.blocks}
    assert sorted(producers.values()) == ["Add"] + ["Split"] * 4  # the second of two chained bottlenecks reads the first's sum


@pytest.mark.parametrize("name", ["vit_ts", "vit_dynamo", "bert_ts", "bert_dynamo"])
def test_transformer_attention_and_mlp_sub_blocks(name):
    found = discover(by_name(name).load())
    # two layers, each an attention sub-block (q, k, v, out projections) and an MLP (two layers)
    assert [b.layers for b in found.blocks] == [4, 2, 4, 2]
    assert all(PARALLEL in r.reason or "broadcast" in r.reason for r in found.refused)


def test_broadcast_skip_and_graph_output_joins_are_refused():
    b = GraphBuilder(seed=1)
    x = b.input("x", [1, 4, 8, 8])
    pooled = b.op("GlobalAveragePool", [x])  # [1, 4, 1, 1]: the skip would broadcast
    y = b.op("Add", [pooled, b.conv(b.relu(b.op("Mul", [x, pooled])), 4, k=1)])
    z = b.op("Add", [y, b.conv(y, 4)])
    b.output(b.rename(z, "out"))
    found = discover(b.build())
    assert not found.blocks
    reasons = sorted(r.reason for r in found.refused)
    assert "broadcast" in reasons[1] and "graph output" in reasons[0]


def _nested():
    """An outer residual whose branch holds an inner residual block."""
    b = GraphBuilder(seed=5, name="nested")
    x = _cbr(b, b.input("input", [1, 3, 16, 16]), 8)
    a = _cbr(b, x, 8)
    inner = b.relu(b.op("Add", [a, _cbr(b, _cbr(b, a, 8), 8, act=None)]))
    outer = b.relu(b.op("Add", [x, _cbr(b, inner, 8, act=None)]))
    _head(b, outer)
    return b.build()


def test_nested_blocks_outer_contains_inner_and_never_both_go():
    model = _nested()
    found = discover(model)
    inner, outer = found.blocks
    assert inner.removed_nodes < frozenset(outer.nodes) and inner.overlaps(outer)
    pruner = Pruner.from_model(model)
    with pytest.raises(PlanError, match="overlap"):
        pruner.remove_block_keys([inner.key, outer.key])
    removed = pruner.remove_blocks(2)  # only one fits
    assert len(removed) == 1
    assert len(pruner.blocks().blocks) == (0 if removed[0]["join"] == outer.join else 1)


# ----------------------------------------------------------------------------- oracle
@pytest.mark.parametrize("name", ["resnet_basic", "resnet_bottleneck", "mobilenetv2", "mobilenetv3", "resnext",
                                  "yolo_neck"])
def test_removing_a_block_equals_zeroing_its_branch(name):
    model = ARCHITECTURES[name]()
    assert assert_removal_is_zeroing(model, [random_feeds(model)]) >= 1


def test_removing_the_nested_outer_block_equals_zeroing_it():
    model = _nested()
    assert assert_removal_is_zeroing(model, [random_feeds(model)]) == 2


@pytest.mark.parametrize("name", ["vit_ts", "vit_dynamo", "bert_ts", "bert_dynamo", "gpt2_dynamo", "llama_dynamo"])
def test_removing_a_transformer_sub_block_equals_zeroing_it(name):
    exported = by_name(name)
    assert assert_removal_is_zeroing(exported.load(), [exported.feeds(0), exported.feeds(1)]) == 4


def test_unknown_block_key_is_one_clear_error():
    pruner = Pruner.from_model(ARCHITECTURES["resnet_basic"]())
    with pytest.raises(PlanError, match="no removable block"):
        pruner.remove_block_keys([("Add_9", "Relu_0")])


# ----------------------------------------------------------------------------- joins of more addends
def _sum_of_three(graph_output: bool = False):
    """y = Sum(x, f(x), g(x)): two branches joined with their skip in one Sum."""
    b = GraphBuilder(seed=9, name="sum3")
    x = _cbr(b, b.input("input", [1, 3, 12, 12]), 8)
    f = _cbr(b, _cbr(b, x, 8), 8, act=None)
    g = _cbr(b, x, 8, k=1, act=None)
    y = b.op("Sum", [x, f, g])
    if graph_output:
        b.output(b.rename(y, "y"))
        return b.build(), f, g
    _head(b, b.relu(y))
    return b.build(), f, g


def test_a_sum_of_three_holds_one_block_per_branch():
    model, f, g = _sum_of_three()
    found = discover(model)
    assert sorted(b.residual for b in found.blocks) == sorted([f, g]) and not found.refused
    assert all(b.addends == 3 and b.join == "Sum_0" for b in found.blocks)
    first, second = found.blocks
    assert not first.overlaps(second)  # siblings: the join stays for the other one
    assert assert_removal_is_zeroing(model, [random_feeds(model), random_feeds(model, 1)]) == 2


def test_both_branches_of_a_sum_go_together_and_the_join_with_them():
    model, f, g = _sum_of_three()
    pruner = Pruner.from_model(model)
    keys = [b.key for b in pruner.blocks().blocks]
    pruner.remove_block_keys(keys)
    removed = pruner.to_model()
    onnx.checker.check_model(removed, full_check=True)
    assert "Sum" not in [n.op_type for n in removed.graph.node]
    zeroed = zero_branch(model, "Sum_0", f, g)
    feeds = random_feeds(model)
    np.testing.assert_allclose(run(removed, feeds)[0], run(zeroed, feeds)[0], rtol=1e-4, atol=1e-5)
    again = Pruner.from_model(model)  # the saved plan re-applies
    Recipe.from_json(pruner.recipe.to_json()).replay(again)
    np.testing.assert_allclose(run(again.to_model(), feeds)[0], run(removed, feeds)[0], rtol=1e-6)


def test_a_sum_of_three_that_is_a_graph_output_keeps_its_join():
    model, f, _ = _sum_of_three(graph_output=True)
    pruner = Pruner.from_model(model)
    (block,) = [b for b in pruner.blocks().blocks if b.residual == f]
    pruner.remove_block_keys([block.key])
    removed = pruner.to_model()
    assert [n.op_type for n in removed.graph.node].count("Sum") == 1
    assert "y" in pruner.edits.changed
    feeds = random_feeds(model)
    np.testing.assert_allclose(run(removed, feeds)[0], run(zero_branch(model, "Sum_0", f), feeds)[0],
                               rtol=1e-4, atol=1e-5)
