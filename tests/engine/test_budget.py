"""Budgets: normalization, global ranking with a cap, per-pattern ratios, round-to."""
import math

import numpy as np
import onnx
import pytest

from onnxprune import onnx_in
from onnxprune.budget import GroupBudget, allocate, n_to_remove, normalize, round_count
from onnxprune.depgraph import DependencyGraph
from onnxprune.errors import PlanError
from onnxprune.options import PruneOptions, parse_ratio_for
from onnxprune.plan import make_plan
from onnxprune.rewrite import apply_plan
from support.architectures import ARCHITECTURES
from support.small_models import conv_chain


def dg_of(model: onnx.ModelProto) -> DependencyGraph:
    return DependencyGraph(onnx_in.from_model(model))


def scaled(model: onnx.ModelProto, edits, factor: float) -> DependencyGraph:
    """The model's dependency graph with parameter slices scaled: edits are (node, input slot, axis, indices)."""
    graph = onnx_in.from_model(model)
    for node, slot, axis, rows in edits:
        name = graph.node_by_name[node].inputs[slot]
        w = np.moveaxis(graph.params[name].copy(), axis, 0)
        w[list(rows)] *= factor
        graph.params[name] = np.moveaxis(w, 0, axis)
    return DependencyGraph(graph)


# ------------------------------------------------------------ normalize
def test_normalize_divides_by_the_group_mean():
    assert np.allclose(normalize([1.0, 2.0, 3.0]), [0.5, 1.0, 1.5])
    assert np.allclose(normalize([10.0, 20.0, 30.0]), normalize([1.0, 2.0, 3.0]))  # scale-free
    assert np.allclose(normalize([0.0, 0.0]), [0.0, 0.0])
    assert np.allclose(normalize([np.nan, -1.0, 2.0]), [0.0, 0.0, 3.0])


def test_round_count_matches_n_to_remove():
    for size in range(1, 40):
        for ratio in np.linspace(0, 0.99, 12):
            for round_to in (1, 4, 8):
                assert n_to_remove(size, ratio, round_to) == round_count(size, math.floor(size * ratio + 1e-9),
                                                                           round_to)


# ------------------------------------------------------------ allocate
def budgets_from(rng, n_groups=12, fixed=()):
    out = []
    for g in range(n_groups):
        size = int(rng.integers(2, 70))
        scores = normalize(rng.random(size) ** int(rng.integers(1, 5)))
        out.append(GroupBudget(g, size, scores, 0.3 if g in fixed else None))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_ratio", [0.2, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("round_to", [1, 4])
def test_global_never_removes_more_than_the_cap(seed, max_ratio, round_to):
    budgets = budgets_from(np.random.default_rng(seed))
    for level in (0.1, 0.4, 0.7, 0.95):
        counts = allocate(budgets, level, global_rank=True, max_ratio=max_ratio, round_to=round_to)
        for b in budgets:
            n = counts.get(b.group, 0)
            assert n <= math.floor(b.size * max_ratio + 1e-9) and n <= b.size - 1
            if n and round_to > 1:
                assert (b.size - n) % round_to == 0


@pytest.mark.parametrize("seed", range(4))
def test_global_reaches_the_level_where_the_cap_allows(seed):
    budgets = budgets_from(np.random.default_rng(seed))
    total = sum(b.size for b in budgets)
    for level, cap in ((0.3, 1.0), (0.3, 0.4), (0.5, 0.6)):
        counts = allocate(budgets, level, global_rank=True, max_ratio=cap)
        assert sum(counts.values()) == math.floor(total * level)
    # asking more than the caps allow: every group at its cap
    counts = allocate(budgets, 0.9, global_rank=True, max_ratio=0.5)
    assert all(counts.get(b.group, 0) == math.floor(b.size * 0.5) for b in budgets)


def test_global_takes_the_lowest_normalized_scores_first():
    weak = GroupBudget(0, 10, normalize([0.01] * 5 + [1.0] * 5))  # five channels far below their group's mean
    even = GroupBudget(1, 10, normalize([1.0] * 10))
    assert allocate([weak, even], 0.25, global_rank=True) == {0: 5}
    assert allocate([weak, even], 0.25, global_rank=True, max_ratio=0.3) == {0: 3, 1: 2}  # capped, rest elsewhere
    assert allocate([weak, even], 0.25) == {0: 2, 1: 2}  # uniform ignores the scores


def test_fixed_ratios_ignore_the_level():
    budgets = budgets_from(np.random.default_rng(0), fixed={1, 4})
    for global_rank in (False, True):
        counts = allocate(budgets, 0.6, global_rank=global_rank)
        for b in budgets:
            if b.fixed_ratio is not None:
                assert counts.get(b.group, 0) == n_to_remove(b.size, 0.3)
    counts = allocate(budgets, 0.6)
    assert all(counts.get(b.group, 0) == n_to_remove(b.size, 0.6) for b in budgets if b.fixed_ratio is None)


def test_history_counts_against_the_original_group():
    b = GroupBudget(0, 12, normalize(np.arange(1, 13)), original_size=16, removed_before=4)
    assert allocate([b], 0.5) == {0: 4}  # 8 of 16 in total
    assert allocate([b], 0.5, max_ratio=0.375) == {0: 2}  # cap 6 of the original 16
    assert allocate([b], 0.2) == {}  # already past 20%


# ------------------------------------------------------------ make_plan
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_global_plan_respects_the_cap_and_stays_valid(arch):
    dg = dg_of(ARCHITECTURES[arch]())
    plan = make_plan(dg, ratio=0.5, global_rank=True, max_ratio=0.6)
    assert plan.decisions
    for d in plan.decisions:
        assert len(d.removed) <= math.floor(d.size * 0.6 + 1e-9)
    model = onnx.shape_inference.infer_shapes(__import__("onnxprune").onnx_out.to_model(apply_plan(dg, plan)))
    onnx.checker.check_model(model, full_check=True)


def test_global_plan_prunes_a_weak_group_harder():
    # 4 of Conv_1's 6 channels nearly zero in every member of their group (filters, bias, the Gemm's columns)
    weak = range(4)
    dg = scaled(conv_chain(), [("Conv_1", 1, 0, weak), ("Conv_1", 2, 0, weak), ("Gemm_0", 1, 1, weak)], 1e-3)
    uniform = {d.group: len(d.removed) for d in make_plan(dg, ratio=0.3).decisions}
    global_ = {d.group: len(d.removed) for d in make_plan(dg, ratio=0.3, global_rank=True).decisions}
    conv1 = dg.group_of("Conv_1").id
    assert uniform[conv1] == 1 and global_[conv1] == 4
    assert set(make_plan(dg, ratio=0.3, global_rank=True).decisions[-1].removed) == {0, 1, 2, 3}


@pytest.mark.parametrize("arch", ["resnet_basic", "mobilenetv2", "inception"])
def test_ratio_for_applies_to_exactly_the_matching_groups(arch):
    dg = dg_of(ARCHITECTURES[arch]())
    convs = sorted({e.node for g in dg.prunable_groups() for e in g.ends
                    if e.kind == "op" and e.node.startswith("Conv_")})
    pattern = f"^({convs[1]}|{convs[-1]})$"
    matched = {g.id for g in dg.groups_matching(pattern)} & {g.id for g in dg.prunable_groups()}
    assert 0 < len(matched) < len(dg.prunable_groups())
    plan = make_plan(dg, ratio=0.5, ratio_for=[f"{pattern}=0.25"], round_to=1)  # exact counts
    removed = {d.group: len(d.removed) for d in plan.decisions}
    for g in dg.prunable_groups():
        expected = n_to_remove(g.size, 0.25 if g.id in matched else 0.5)
        assert removed.get(g.id, 0) == expected, g.describe()
    # a later pattern wins; --ignore wins over both
    plan = make_plan(dg, ratio=0.5, ratio_for=[f"{pattern}=0.25", f"{pattern}=0.0"])
    assert not {d.group for d in plan.decisions} & matched
    plan = make_plan(dg, ratio=0.5, ratio_for=[f"{pattern}=0.75"], ignore=[pattern])
    assert not {d.group for d in plan.decisions} & matched


def test_ratio_for_with_global_ranking_and_round_to():
    dg = dg_of(ARCHITECTURES["resnet_basic"]())
    first = dg.prunable_groups()[0]
    pattern = "^" + first.root.node + "$"
    plan = make_plan(dg, ratio=0.4, global_rank=True, ratio_for=[f"{pattern}=0.5"], round_to=4)
    removed = {d.group: len(d.removed) for d in plan.decisions}
    assert removed[first.id] == n_to_remove(first.size, 0.5, 4)
    assert all((d.size - len(d.removed)) % 4 == 0 for d in plan.decisions)


def test_uniform_plan_unchanged_by_the_new_defaults():
    dg = dg_of(conv_chain())
    assert make_plan(dg, ratio=0.5) == make_plan(dg, ratio=0.5, max_ratio=1.0, ratio_for=())
    assert [(d.group, len(d.removed)) for d in make_plan(dg, ratio=0.5).decisions] == [(0, 4), (1, 3)]


# ------------------------------------------------------------ options
def test_budget_options_are_checked():
    assert parse_ratio_for("a=b=0.5") == ("a=b", 0.5)
    for bad in ("nothing", "=0.3", "x=half"):
        with pytest.raises(PlanError, match="--ratio-for"):
            PruneOptions(ratio_for=[bad])
    for kwargs, match in ((dict(max_ratio=0.0), "--max-ratio"), (dict(max_ratio=1.5), "--max-ratio"),
                          (dict(ratio_for=[("(", 0.3)]), "--ratio-for"),
                          (dict(ratio_for=[("x", 1.0)]), "--ratio-for"),
                          (dict(target_macs=0.5, target_params=0.5), "one target"),
                          (dict(target_macs=0.0), "--target-macs"), (dict(target_latency=1.5), "--target-latency"),
                          (dict(steps=0), "--steps")):
        with pytest.raises(PlanError, match=match):
            PruneOptions(**kwargs).check()
    options = PruneOptions(ratio_for=["a.*=0.25"], target_params=0.5)
    assert options.target == ("params", 0.5) and options.to_dict()["ratio_for"] == ["a.*=0.25"]
