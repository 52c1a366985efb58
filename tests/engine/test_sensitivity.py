"""Sensitivity analysis: units, ranks on a planted case, JSON round trip, suggestions that feed --ratio-for."""
import numpy as np
import pytest

from onnxprune import onnx_in
from onnxprune.api import Pruner
from onnxprune.budget import n_to_remove
from onnxprune.depgraph import DependencyGraph
from onnxprune.errors import InputError
from onnxprune.options import PruneOptions
from onnxprune.plan import make_plan
from onnxprune.sensitivity import Sensitivity, units_of
from support.architectures import ARCHITECTURES
from support.builder import GraphBuilder


def two_branches():
    """input -> Conv_0(8) -> Relu, input -> Conv_1(6) -> Relu; Concat -> Conv_2(4) -> output."""
    b = GraphBuilder(seed=3, name="two_branches")
    x = b.input("input", [1, 3, 8, 8])
    y = b.op("Concat", [b.relu(b.conv(x, 8)), b.relu(b.conv(x, 6))], axis=1)
    b.output(b.rename(b.conv(y, 4, k=1), "output"))
    return b.build()


def planted() -> Pruner:
    """Conv_2 barely reads Conv_1's channels: that group is unimportant, Conv_0's is not."""
    graph = onnx_in.from_model(two_branches())
    name = graph.node_by_name["Conv_2"].inputs[1]
    w = graph.params[name].copy()
    w[:, 8:] *= np.float32(1e-3)
    graph.params[name] = w
    return Pruner(graph)


@pytest.fixture(scope="module")
def result():
    pruner = planted()
    return pruner.sensitivity(pruner.random_inputs(16), ratios=[0.25, 0.5, 0.75], options=PruneOptions(round_to=1))


def unit(result, node):
    return next(u for u in result.units if u.name == node)


def test_the_planted_unimportant_group_moves_the_outputs_least(result):
    important, unimportant = unit(result, "Conv_0"), unit(result, "Conv_1")
    assert [p.ratio for p in important.points] == [0.25, 0.5, 0.75] == [p.ratio for p in unimportant.points]
    for a, b in zip(important.points, unimportant.points):
        assert b.error() < a.error() / 10, (a, b)
        assert b.rel_l2 < a.rel_l2 and b.max_abs < a.max_abs
        assert a.removed == n_to_remove(8, a.ratio) and b.removed == n_to_remove(6, b.ratio)
        assert 0 < b.macs_ratio < 1
    errors = [p.error() for p in important.points]
    assert errors == sorted(errors) and errors[0] > 0  # more removed, more error
    assert result.table().splitlines()[2].startswith("Conv_0")  # most sensitive first


def test_suggestions_keep_each_unit_within_the_budget(result):
    important, unimportant = unit(result, "Conv_0"), unit(result, "Conv_1")
    budget = (important.points[0].error() + unimportant.points[-1].error()) / 2
    assert important.points[0].error() > budget >= unimportant.points[-1].error()
    suggested = dict(result.suggest(budget))
    assert suggested == {important.pattern: 0.0, unimportant.pattern: 0.75}
    words = result.ratio_for_options(budget)
    assert words == ["--ratio-for", f"{important.pattern}=0", "--ratio-for", f"{unimportant.pattern}=0.75"]
    with pytest.raises(InputError, match="unknown error measure"):
        result.suggest(0.1, by="psnr")


def test_suggestions_fed_to_the_planner_prune_exactly_those_units(result):
    pruner = planted()
    budget = unit(result, "Conv_1").points[-1].error()
    plan = make_plan(pruner.depgraph, ratio=0.5, ratio_for=result.suggest(budget))
    assert {d.group: len(d.removed) for d in plan.decisions} == {pruner.group_of("Conv_1").id: 4}


def test_json_round_trip(result):
    again = Sensitivity.from_json(result.to_json())
    assert again == result
    with pytest.raises(InputError, match="not a sensitivity report"):
        Sensitivity.from_json('{"decisions": []}', "sens.json")


@pytest.mark.parametrize("arch,blocks", [("resnet_basic", 0), ("inception", 0), ("shufflenetv2", 0),
                                         ("yolo_neck", 0), ("mobilenetv3", 0)])
def test_unit_patterns_match_exactly_their_groups(arch, blocks):
    dg = DependencyGraph(onnx_in.from_model(ARCHITECTURES[arch]()))
    units = units_of(dg, blocks)
    prunable = {g.id for g in dg.prunable_groups()}
    seen = [g for u in units for g in u.groups]
    assert sorted(seen) == sorted(prunable)  # every prunable group in exactly one unit
    for u in units:
        assert {g.id for g in dg.groups_matching(u.pattern)} & prunable == set(u.groups), u


def test_blocks_group_by_name_prefix():
    from onnxprune.sensitivity import _block
    assert _block("/layer1/layer1.0/conv1/Conv", 2) == "/layer1/layer1.0"
    assert _block("/layer1/layer1.0/conv1/Conv", 1) == "/layer1"
    assert _block("/conv1/Conv", 2) == "/conv1/Conv"
    assert _block("Conv_3", 1) == "Conv_3" and _block("a/b/c", 1) == "a"


def test_plot_writes_a_png(result, tmp_path):
    path = tmp_path / "sens.png"
    result.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
