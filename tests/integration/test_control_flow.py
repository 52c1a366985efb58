"""If/Loop bodies (issue 17): each analysed as a graph of its own. Channels entirely inside a body prune
there (its initializers and Constant nodes rewritten); channels crossing a body's boundary are a barrier
naming the subgraph and the tensor; the enclosing graph around the node still prunes.

Models: tests/models/realworld/if_convs.onnx, loop_constant_weights.onnx (scripts/build_realworld_models.py).
The oracle: a body with a group's channels removed equals the body with them zeroed, in the whole model,
on inputs that take each branch.
"""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnxprune import Pruner, onnx_in, onnx_out
from onnxprune.depgraph import DependencyGraph
from onnxprune.masking import mask_group
from onnxprune.plan import GroupDecision, Plan
from onnxprune.rewrite import apply_plan
from support.exported import MODELS_DIR
from support.oracle import assert_group_oracle, run

REALWORLD = os.path.join(MODELS_DIR, "realworld")
MACS = {"if_convs": 0.54, "loop_constant_weights": 0.53}  # at --ratio 0.5, exact widths, as measured
BODIES = {"if_convs": ("if", ("then_branch", "else_branch")), "loop_constant_weights": ("loop", ("body",))}


def _load(name):
    return onnx.load(os.path.join(REALWORLD, f"{name}.onnx"))


def _feeds(sign, seed=0):
    """Inputs whose mean is positive (sign 1: the If takes its then branch) or negative (-1: else)."""
    x = np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(np.float32)
    return {"x": x + np.float32(sign)}


def _with_body(graph, node_name, attr, body, formal) -> onnx.ModelProto:
    node = graph.node_by_name[node_name]
    attrs = {**node.attrs, attr: onnx_out.body_proto(body, formal)}
    nodes = [dataclasses.replace(n, attrs=attrs) if n is node else n for n in graph.nodes]
    return onnx_out.to_model(dataclasses.replace(graph, nodes=nodes))


@pytest.mark.parametrize("name", sorted(BODIES))
def test_groups_inside_a_body_equal_zeroing_in_the_whole_model(name):
    graph = onnx_in.from_model(_load(name))
    node, attrs = BODIES[name]
    checked = 0
    for attr in attrs:
        body, formal = onnx_in.body_graph(graph.node_by_name[node], attr, graph)
        dg = DependencyGraph(body)
        groups = dg.prunable_groups()
        assert len(groups) == 1  # the one conv-to-conv width inside each body
        for group in groups:
            channels = tuple(range(0, group.size, 2))
            plan = Plan((GroupDecision(group.id, str(group.root), group.size, channels),))
            pruned = _with_body(graph, node, attr, apply_plan(dg, plan), formal)
            masked = _with_body(graph, node, attr, mask_group(dg, group, channels), formal)
            onnx.checker.check_model(pruned, full_check=True)
            for sign in (1, -1):
                for a, b in zip(run(pruned, _feeds(sign)), run(masked, _feeds(sign))):
                    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
            checked += 1
    assert checked == len(attrs)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_the_enclosing_graph_prunes_around_the_node_and_crossing_channels_are_named(name):
    pruner = Pruner.from_model(_load(name))
    dg = pruner.depgraph
    (outside,) = pruner.prunable_groups()  # the conv-relu-conv after the If / Loop
    assert outside.size == 16
    for sign in (1, -1):
        assert_group_oracle(dg, outside, tuple(range(1, 16, 2)), _feeds(sign))
    crossing = pruner.group_of("c1_1")
    assert not crossing.prunable
    node, attrs = BODIES[name]
    (reason,) = [r for r in crossing.blocked if "crossing a subgraph boundary" in r]
    assert all(f"{node}.{attr}" in reason for attr in attrs)
    assert ("r1 crosses into subgraph" if name == "if_convs" else "c1_1 goes into subgraph") in reason


@pytest.mark.parametrize("name", sorted(BODIES))
def test_pruning_removes_channels_inside_bodies_and_keeps_the_model_valid(name):
    model = _load(name)
    pruner = Pruner.from_model(model)
    assert pruner.prunable_inside_subgraphs() == len(BODIES[name][1])
    macs, params = pruner.macs(), pruner.params()
    pruner.prune(ratio=0.5, round_to=1)
    (note,) = pruner.body_notes
    assert note.startswith("inside subgraphs: ")
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    node = next(n for n in pruned.graph.node if n.op_type in ("If", "Loop"))
    weights = [t for a in node.attribute for t in a.g.initializer if len(t.dims) == 4]
    assert weights and all(t.dims[0] < 16 or t.dims[1] < 16 for t in weights)  # sliced inside
    for sign in (1, -1):
        assert [a.shape for a in run(pruned, _feeds(sign))] == [a.shape for a in run(model, _feeds(sign))]
    assert pruner.macs() / macs <= MACS[name]
    assert pruner.params() < params


def test_the_command_line_says_what_it_removed_inside_subgraphs(tmp_path):
    out = tmp_path / "out.onnx"
    done = subprocess.run([sys.executable, "-m", "onnxprune", os.path.join(REALWORLD, "if_convs.onnx"), str(out),
                           "--ratio", "0.5", "--runs", "0", "--round-to", "1"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert ("          inside subgraphs: 11 channels removed in if.else_branch (1 groups, 5 ch), if.then_branch "
            "(1 groups, 6 ch)") in done.stdout
    assert "r1 crosses into subgraph if.else_branch, if.then_branch (If)" in done.stdout
    pruned, original = onnx.load(str(out)), _load("if_convs")
    for sign in (1, -1):
        assert run(pruned, _feeds(sign))[0].shape == run(original, _feeds(sign))[0].shape
