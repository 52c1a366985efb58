"""If/Loop bodies (issue 17): each analysed as a graph of its own. Channels entirely inside a body prune
there (its initializers and Constant nodes rewritten); channels crossing a body's boundary are a barrier
naming the subgraph and the tensor; the enclosing graph around the node still prunes.

Models: tests/models/realworld/if_convs.onnx, loop_constant_weights.onnx, scan_convs.onnx
(scripts/build_realworld_models.py).
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
from onnxprune.bodies import body_groups, flatten, unflatten
from onnxprune.registry import builtin_registry
from onnxprune.rewrite import apply_plan, kept_per_axis, removed_per_dim
from support.exported import MODELS_DIR
from support.oracle import assert_group_oracle, run

REALWORLD = os.path.join(MODELS_DIR, "realworld")
# at --ratio 0.5, exact widths, as measured
MACS = {"if_convs": 0.28, "loop_constant_weights": 0.53, "scan_convs": 0.60}
BODIES = {"if_convs": ("if", ("then_branch", "else_branch")), "loop_constant_weights": ("loop", ("body",)),
          "scan_convs": ("scan", ("body",))}
FRAMES = {"scan_convs": 4}  # the batch axis of models whose input is a sequence of frames (else 1)


def _load(name):
    return onnx.load(os.path.join(REALWORLD, f"{name}.onnx"))


def _feeds(sign, seed=0, name=""):
    """Inputs whose mean is positive (sign 1: the If takes its then branch) or negative (-1: else)."""
    x = np.random.default_rng(seed).standard_normal((FRAMES.get(name, 1), 3, 16, 16)).astype(np.float32)
    return {"x": x + np.float32(sign)}


def _with_body(graph, node_name, attr, body, formal) -> onnx.ModelProto:
    node = graph.node_by_name[node_name]
    attrs = {**node.attrs, attr: onnx_out.body_proto(body, formal)}
    nodes = [dataclasses.replace(n, attrs=attrs) if n is node else n for n in graph.nodes]
    return onnx_out.to_model(dataclasses.replace(graph, nodes=nodes))


def test_loop_body_groups_equal_zeroing_in_the_whole_model():
    graph = onnx_in.from_model(_load("loop_constant_weights"))
    body, formal = onnx_in.body_graph(graph.node_by_name["loop"], "body", graph)
    dg = DependencyGraph(body)
    (group,) = dg.prunable_groups()  # the conv-to-conv width inside the body; its residual width crosses
    assert group.size == 16
    channels = tuple(range(0, group.size, 2))
    plan = Plan((GroupDecision(group.id, str(group.root), group.size, channels),))
    pruned = _with_body(graph, "loop", "body", apply_plan(dg, plan), formal)
    masked = _with_body(graph, "loop", "body", mask_group(dg, group, channels), formal)
    onnx.checker.check_model(pruned, full_check=True)
    for a, b in zip(run(pruned, _feeds(1)), run(masked, _feeds(1))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_scan_body_groups_equal_zeroing_in_the_whole_model():
    """The Scan body's conv-to-conv width (16), run once per frame: removing channels equals zeroing
    them, on every output (the carried sum and the per-frame outputs); the frames' channels and the
    body's output width cross the boundary and are not in the body's groups."""
    model = _load("scan_convs")
    graph = onnx_in.from_model(model)
    body, formal = onnx_in.body_graph(graph.node_by_name["scan"], "body", graph)
    dg = DependencyGraph(body)
    (group,) = dg.prunable_groups()
    assert group.size == 16 and {e.node for e in group.ends if e.node} >= {"b1", "b2"}
    for channels in (tuple(range(0, 16, 2)), (3,), tuple(range(1, 16))):
        plan = Plan((GroupDecision(group.id, str(group.root), group.size, channels),))
        pruned = _with_body(graph, "scan", "body", apply_plan(dg, plan), formal)
        masked = _with_body(graph, "scan", "body", mask_group(dg, group, channels), formal)
        onnx.checker.check_model(pruned, full_check=True)
        feeds = _feeds(1, name="scan_convs")
        for a, b, c in zip(run(pruned, feeds), run(masked, feeds), run(model, feeds)):
            assert a.shape == c.shape
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        assert not np.allclose(run(pruned, feeds)[0], run(model, feeds)[0], atol=1e-3)  # it did remove something


def _flat_oracle(model, group_sizes):
    """Every If group with channels in a branch, flattened: removing every other channel equals zeroing
    it, on inputs that take each branch. Returns the flat analysis."""
    graph = onnx_in.from_model(model)
    flat = flatten(graph, builtin_registry())
    dg = DependencyGraph(flat.graph)
    groups = body_groups(flat, dg)
    assert sorted(g.size for g in groups) == group_sizes
    for group in groups:
        channels = tuple(range(0, group.size, 2))
        plan = Plan((GroupDecision(group.id, str(group.root), group.size, channels),))
        kept = kept_per_axis(flat.graph, removed_per_dim(dg, plan))
        pruned = onnx_out.to_model(unflatten(flat, apply_plan(dg, plan, kept), kept))
        masked = onnx_out.to_model(unflatten(flat, mask_group(dg, group, channels), {}))
        onnx.checker.check_model(pruned, full_check=True)
        for sign in (1, -1):
            for a, b in zip(run(pruned, _feeds(sign)), run(masked, _feeds(sign))):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=group.describe())
    return flat, dg


def test_if_groups_inside_branches_and_across_them_equal_zeroing():
    """Flattened: the then branch's inner width (12), the else branch's (10), the outer activation both
    branches read (16: both agree), the If's output with both branches' last convs (8)."""
    flat, dg = _flat_oracle(_load("if_convs"), [8, 10, 12, 16])
    crossing = dg.group_of("c1_1")
    assert crossing.prunable and {e.node for e in crossing.ends} >= {"if.then_branch::t1", "if.else_branch::e1"}


def _disagreeing_if() -> onnx.ModelProto:
    """conv-relu, an If whose then branch convolves the activation and whose else branch runs CumSum over
    its channels (no rule: the branches disagree) before a conv, then a conv."""
    h = onnx.helper
    rng = np.random.default_rng(5)
    f = lambda name, shape: h.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)  # noqa: E731
    w = lambda shape: onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3)  # noqa: E731
    const = lambda name, shape: h.make_node("Constant", [], [name], value=w(shape))  # noqa: E731
    then = h.make_graph([const("tw", [4, 8, 3, 3]), h.make_node("Conv", ["r1", "tw"], ["ty"], pads=[1] * 4)],
                        "then", [], [f("ty", [1, 4, 16, 16])])
    other = h.make_graph([h.make_node("Constant", [], ["axis"], value_int=1),
                          h.make_node("CumSum", ["r1", "axis"], ["cs"], name="cs"),
                          const("ew", [4, 8, 1, 1]), h.make_node("Conv", ["cs", "ew"], ["ey"])],
                         "else", [], [f("ey", [1, 4, 16, 16])])
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1] * 4, name="c1"),
             h.make_node("Relu", ["c1"], ["r1"], name="r1"),
             h.make_node("ReduceMean", ["x"], ["mean"], keepdims=0),
             h.make_node("Greater", ["mean", "zero"], ["positive"]),
             h.make_node("If", ["positive"], ["y"], name="if", then_branch=then, else_branch=other),
             h.make_node("Conv", ["y", "w3"], ["out"], name="c3")]
    inits = [onnx.numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
             for n, s in (("w1", [8, 3, 3, 3]), ("w3", [2, 4, 1, 1]))]
    inits.append(onnx.numpy_helper.from_array(np.array(0, np.float32), "zero"))
    model = h.make_model(h.make_graph(nodes, "disagree", [f("x", [1, 3, 16, 16])], [f("out", [1, 2, 16, 16])],
                                      inits), opset_imports=[h.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_if_channels_the_branches_disagree_on_are_a_barrier_naming_the_subgraph():
    """The else branch cannot prune the activation's channels: that group is blocked, by a reason that
    names the branch and its node; the If's output (both branches' convs agree) still prunes."""
    model = _disagreeing_if()
    flat, dg = _flat_oracle(model, [4])
    crossing = dg.group_of("c1")
    assert not crossing.prunable
    assert any(r.startswith("CumSum if.else_branch::cs: no rule for CumSum") for r in crossing.blocked), \
        crossing.blocked
    pruner = Pruner.from_model(model)
    pruner.prune(ratio=0.5, round_to=1)
    assert pruner.body_notes == ["inside subgraphs: 2 channels removed in if (1 groups, 2 ch)"]
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    for sign in (1, -1):
        assert run(pruned, _feeds(sign))[0].shape == (1, 2, 16, 16)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_the_enclosing_graph_prunes_around_the_node_and_crossing_channels_are_named(name):
    pruner = Pruner.from_model(_load(name))
    dg = pruner.depgraph
    (outside,) = pruner.prunable_groups()  # the conv-relu-conv after the If / Loop
    assert outside.size == 16
    for sign in (1, -1):
        assert_group_oracle(dg, outside, tuple(range(1, 16, 2)), _feeds(sign, name=name))
    crossing = pruner.group_of("c1_1")
    assert not crossing.prunable
    node, attrs = BODIES[name]
    (reason,) = [r for r in crossing.blocked if "subgraph" in r]
    assert all(f"{node}.{attr}" in reason for attr in attrs)
    if name == "if_convs":  # the If's own analysis, flattened, prunes it (see the flat tests)
        assert "r1 crosses into subgraph" in reason and "left to subgraph pruning" in reason
    else:  # the tensor that crosses: the Loop's carried value, the Scan's frames
        tensor = {"loop_constant_weights": "c1_1", "scan_convs": "frames"}[name]
        assert f"{tensor} goes into subgraph {node}.body: channels crossing a subgraph boundary are not pruned" \
            in reason


@pytest.mark.parametrize("name", sorted(BODIES))
def test_pruning_removes_channels_inside_bodies_and_keeps_the_model_valid(name):
    model = _load(name)
    pruner = Pruner.from_model(model)
    assert pruner.prunable_inside_subgraphs() == {"if_convs": 4, "loop_constant_weights": 1, "scan_convs": 1}[name]
    macs, params = pruner.macs(), pruner.params()
    pruner.prune(ratio=0.5, round_to=1)
    (note,) = pruner.body_notes
    assert note.startswith("inside subgraphs: ")
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    node = next(n for n in pruned.graph.node if n.op_type in ("If", "Loop", "Scan"))
    weights = [t for a in node.attribute for t in a.g.initializer if len(t.dims) == 4]
    assert weights and all(t.dims[0] < 16 or t.dims[1] < 16 for t in weights)  # sliced inside
    for sign in (1, -1):
        feeds = _feeds(sign, name=name)
        assert [a.shape for a in run(pruned, feeds)] == [a.shape for a in run(model, feeds)]
    assert pruner.macs() / macs <= MACS[name]
    assert pruner.params() < params


def test_the_command_line_says_what_it_removed_inside_subgraphs(tmp_path):
    out = tmp_path / "out.onnx"
    done = subprocess.run([sys.executable, "-m", "onnxprune", os.path.join(REALWORLD, "if_convs.onnx"), str(out),
                           "--ratio", "0.5", "--runs", "0", "--round-to", "1"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert "          inside subgraphs: 23 channels removed in if (4 groups, 23 ch)" in done.stdout
    pruned, original = onnx.load(str(out)), _load("if_convs")
    for sign in (1, -1):
        assert run(pruned, _feeds(sign))[0].shape == run(original, _feeds(sign))[0].shape


def test_the_pass_map_says_which_channels_the_enclosing_graph_kept():
    """Channels crossing into the If prune in the outer activation too: the pass's map says which stayed,
    and that everything after the If holds other values, so recovery and reports follow it."""
    pruner = Pruner.from_model(_load("if_convs"))
    pruner.prune(ratio=0.5, round_to=1)
    kept = pruner.kept["c1_1"][1]
    assert len(kept) == 8 and set(kept) < set(range(16))
    assert pruner.graph.values["c1_1"].shape[1] == 8
    last = pruner.passes[-1]
    assert last.name == "subgraph pruning" and {"branch_y", "c4_1"} <= last.edits.changed


# ----------------------------------------------------------------------------- saved plans and targets

def _written(tmp_path, capfd, name, options):
    """Prune ``name`` from the command line with ``options`` and --save-plan, then apply the plan:
    (the pruned file's bytes, the applied file's bytes, the recipe's JSON, the prune's stdout)."""
    from support.cli import call
    source = os.path.join(REALWORLD, f"{name}.onnx")
    code, out, err = call(capfd, [source, tmp_path / "pruned.onnx", *options, "--runs", "0",
                                  "--save-plan", tmp_path / "plan.json"])
    assert code == 0, err
    code, _, err = call(capfd, ["-q", "apply", tmp_path / "plan.json", source, tmp_path / "applied.onnx",
                                "--runs", "0"])
    assert code == 0, err
    return ((tmp_path / "pruned.onnx").read_bytes(), (tmp_path / "applied.onnx").read_bytes(),
            (tmp_path / "plan.json").read_text(), out)


@pytest.mark.parametrize("options", [["--ratio", "0.5", "--round-to", "1"], ["--target-macs", "0.5"],
                                     ["--ratio", "0.5", "--steps", "2", "--round-to", "1"]])
@pytest.mark.parametrize("name", sorted(BODIES))
def test_a_saved_plan_re_applies_the_pruning_inside_subgraphs_byte_identically(tmp_path, capfd, name, options):
    import json
    pruned, applied, recipe, out = _written(tmp_path, capfd, name, options)
    assert "inside subgraphs: " in out
    steps = json.loads(recipe)["steps"]
    assert [s["kind"] for s in steps][-1] == "subgraphs"
    (inside,) = [s["payload"]["subgraphs"] for s in steps if s["kind"] == "subgraphs"]
    node, _ = BODIES[name]
    assert all(e["where"].startswith(node) and e["plan"]["decisions"] for e in inside)
    assert applied == pruned  # the bodies as the prune left them, not re-planned and not left unpruned
    model = onnx.load_from_string(pruned)
    onnx.checker.check_model(model, full_check=True)
    body = next(n for n in model.graph.node if n.op_type in ("If", "Loop", "Scan"))
    assert any(t.dims[0] < 16 for a in body.attribute for t in a.g.initializer if len(t.dims) == 4)


def _body_macs(model) -> int:
    from onnxprune.bodies import macs_inside
    pruner = Pruner.from_model(model)
    return macs_inside(pruner.graph, pruner.registry)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_a_macs_target_counts_and_prunes_the_macs_inside_subgraphs(tmp_path, capfd, name):
    """--target-macs 0.5 is met with the bodies' MACs counted (they are most of these models' MACs):
    the bodies are pruned at the level the search found, and the model's total MACs land on the target."""
    original = _load(name)
    pruned_bytes, _, _, out = _written(tmp_path, capfd, name, ["--target-macs", "0.5"])
    pruned = onnx.load_from_string(pruned_bytes)
    before, after = Pruner.from_model(original).macs(), Pruner.from_model(pruned).macs()
    assert _body_macs(original) > before / 2  # without the bodies the target is out of reach
    assert abs(after / before - 0.5) <= 0.02, (after, before)
    assert _body_macs(pruned) < _body_macs(original)
    assert "target    macs x0.500 asked" in out
    for sign in (1, -1):
        feeds = _feeds(sign, name=name)
        assert [a.shape for a in run(pruned, feeds)] == [a.shape for a in run(original, feeds)]


def test_the_api_search_result_carries_how_it_pruned_the_subgraphs():
    pruner = Pruner.from_model(_load("if_convs"))
    macs = pruner.macs()
    pruner.prune(target_macs=0.4, round_to=1)
    search = pruner.searches[-1]
    assert search.subgraphs is not None and search.met
    assert pruner.macs() / macs == pytest.approx(search.reached)  # what the search measured is what was written
    assert pruner.recipe.steps[-1].kind == "subgraphs"


def test_a_subgraph_step_that_does_not_fit_the_model_is_one_line(tmp_path, capfd):
    import json
    from support.cli import call
    _written(tmp_path, capfd, "loop_constant_weights", ["--ratio", "0.5", "--round-to", "1"])
    recipe = json.loads((tmp_path / "plan.json").read_text())
    (step,) = [s for s in recipe["steps"] if s["kind"] == "subgraphs"]
    step["payload"]["subgraphs"][0]["plan"]["decisions"][0]["size"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(recipe))
    code, out, err = call(capfd, ["apply", tmp_path / "bad.json", os.path.join(REALWORLD, "loop_constant_weights.onnx"),
                                  tmp_path / "bad.onnx", "--runs", "0"])
    assert code != 0 and not (tmp_path / "bad.onnx").exists()
    assert len(err.strip().splitlines()) == 1 and "subgraph loop.body" in err and "99 channels" in err, err
    step["payload"]["subgraphs"][0]["where"] = "nowhere.body"
    (tmp_path / "bad.json").write_text(json.dumps(recipe))
    code, out, err = call(capfd, ["apply", tmp_path / "bad.json", os.path.join(REALWORLD, "loop_constant_weights.onnx"),
                                  tmp_path / "bad.onnx", "--runs", "0"])
    assert code != 0 and "nowhere.body" in err and len(err.strip().splitlines()) == 1, err


def test_a_latency_target_counts_the_subgraphs_pruned_as_they_will_be_written():
    """--target-latency with an injected provider whose latency is the MACs (bodies included): the
    search prunes the bodies at each level, the candidates are timed with them pruned, and the model
    written is the one timed."""
    from onnxprune.latency import RatioSpread
    pruner = Pruner.from_model(_load("if_convs"))
    macs0, timed = pruner.macs(), []

    def provider(graphs):
        ratios = [Pruner(g, pruner.registry).macs() / macs0 for g in graphs]
        timed.extend(ratios)
        return [RatioSpread(r, (r - 0.01, r + 0.01), (r - 0.005, r + 0.005)) for r in ratios]
    pruner.prune(target_latency=0.5, round_to=1, graph_latency=provider)
    found = pruner.searches[-1].depth_width
    assert found.met and found.chosen.latency.median == pytest.approx(pruner.macs() / macs0)
    assert abs(pruner.macs() / macs0 - 0.5) <= 0.02
    assert pruner.recipe.steps[-1].kind == "subgraphs"
