"""Planning: how many channels go, which groups, option errors, JSON, keeping ends alive."""
import json

import numpy as np
import pytest

from onnxprune import onnx_in
from onnxprune.depgraph import DependencyGraph
from onnxprune.errors import PlanError
from onnxprune.options import PruneOptions
from onnxprune.budget import n_to_remove
from onnxprune.plan import GroupDecision, Plan, keep_every_end_alive, make_plan
from onnxprune.rewrite import apply_plan
from support.builder import GraphBuilder
from support.small_models import conv_chain, residual


@pytest.fixture(scope="module")
def dg():
    return DependencyGraph(onnx_in.from_model(conv_chain()))


# ------------------------------------------------------------ n_to_remove
@pytest.mark.parametrize("size,ratio,expected", [
    (8, 0.5, 4), (8, 0.0, 0), (10, 0.25, 2), (10, 0.3, 3), (10, 0.7, 7), (100, 0.29, 29),
    (8, 0.99, 7),   # at least one channel stays
    (2, 0.99, 1), (1, 0.5, 0), (1, 0.99, 0), (3, 0.5, 1),
])
def test_n_to_remove_ratio(size, ratio, expected):
    assert n_to_remove(size, ratio) == expected


@pytest.mark.parametrize("size,ratio,round_to,expected", [
    (16, 0.5, 8, 8),    # keep 8: already a multiple
    (10, 0.5, 4, 2),    # keep 5 -> rounded up to 8
    (12, 0.9, 4, 8),    # keep 2 -> at least one multiple (4)
    (8, 0.5, 8, 0),     # a group no bigger than round_to is left alone
    (6, 0.9, 8, 0),
    (64, 0.3, 16, 16),  # keep 45 -> 48
])
def test_n_to_remove_round_to(size, ratio, round_to, expected):
    assert n_to_remove(size, ratio, round_to) == expected


def test_n_to_remove_invariants():
    for size in range(1, 70):
        for ratio in np.linspace(0, 0.99, 23):
            for round_to in (1, 2, 3, 8):
                n = n_to_remove(size, float(ratio), round_to)
                assert 0 <= n <= max(0, size - 1)
                assert n <= int(np.floor(size * ratio + 1e-9))  # never more than asked
                if n and round_to > 1:
                    assert (size - n) % round_to == 0, (size, ratio, round_to, n)


# ------------------------------------------------------------ make_plan
def test_plan_removes_the_right_count_from_every_prunable_group(dg):
    plan = make_plan(dg, ratio=0.5)
    assert [(d.group, d.size, len(d.removed)) for d in plan.decisions] == [(0, 8, 4), (1, 6, 3)]
    assert all(list(d.removed) == sorted(set(d.removed)) for d in plan.decisions)
    assert all(0 <= k < d.size for d in plan.decisions for k in d.removed)
    assert plan.removed_channels == 7 and plan.criterion == "l2" and plan.ratio == 0.5
    assert make_plan(dg, ratio=0.0).decisions == ()


def test_plan_never_touches_blocked_groups(dg):
    head = dg.group_of("Gemm_0")
    assert head.blocked
    assert head.id not in [d.group for d in make_plan(dg, ratio=0.9).decisions]


def test_ignore_regex_protects_groups(dg):
    plan = make_plan(dg, ratio=0.5, ignore=["^Conv_0$"])
    assert [d.group for d in plan.decisions] == [1]
    assert len(plan.skipped) == 1 and "group 0" in plan.skipped[0] and "--ignore" in plan.skipped[0]
    # a pattern can hit any output-side node of the group (the BN is in Conv_0's group)
    assert [d.group for d in make_plan(dg, ratio=0.5, ignore=["Batch"]).decisions] == [1]
    assert make_plan(dg, ratio=0.5, ignore=["Conv", "nothing"]).decisions == ()
    assert make_plan(dg, ratio=0.5, ignore=["unrelated"]) == make_plan(dg, ratio=0.5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(ratio=1.0), "--ratio"), (dict(ratio=1.5), "--ratio"), (dict(ratio=-0.1), "--ratio"),
    (dict(ratio=float("nan")), "--ratio"),
    (dict(ratio=0.5, criterion="l3"), "unknown criterion 'l3'"),
    (dict(ratio=0.5, round_to=0), "--round-to"),
    (dict(ratio=0.5, ignore=["Conv(["]), "bad regular expression"),
    (dict(ratio=0.5, seed=-1), "--seed"),
])
def test_bad_options_raise_plan_error(dg, kwargs, message):
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace("[", r"\[")):
        make_plan(dg, **kwargs)
    with pytest.raises(PlanError):
        PruneOptions(**kwargs).check()


def test_plan_is_deterministic_per_seed(dg):
    assert make_plan(dg, ratio=0.5, criterion="random", seed=3) == make_plan(dg, ratio=0.5, criterion="random", seed=3)
    plans = {make_plan(dg, ratio=0.5, criterion="random", seed=s).decisions for s in range(6)}
    assert len(plans) > 1


# ------------------------------------------------------------ JSON
def test_plan_json_round_trip(dg):
    plan = make_plan(dg, ratio=0.5, criterion="l1", ignore=["Conv_1"])
    text = plan.to_json()
    data = json.loads(text)
    assert data["criterion"] == "l1" and data["ratio"] == 0.5
    assert data["decisions"][0]["removed"] == list(plan.decisions[0].removed)
    again = Plan.from_json(text)
    assert again == plan and isinstance(again.decisions[0].removed, tuple)
    assert again.skipped == plan.skipped


def test_a_plan_from_json_applies_like_the_original(dg):
    plan = make_plan(dg, ratio=0.5)
    a, b = apply_plan(dg, plan), apply_plan(dg, Plan.from_json(plan.to_json()))
    assert a.params.keys() == b.params.keys()
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


# ------------------------------------------------------------ keep_every_end_alive
def test_keep_every_end_alive_un_removes_a_channel(dg):
    everything = Plan((GroupDecision(0, "r", 8, tuple(range(8))), GroupDecision(1, "r", 6, (0, 1))))
    fixed = keep_every_end_alive(dg, everything)
    assert [d.group for d in fixed.decisions] == [0, 1]
    assert len(fixed.decisions[0].removed) == 7  # exactly one channel came back
    assert fixed.decisions[1].removed == (0, 1)  # untouched: nothing of it was emptied
    pruned = apply_plan(dg, fixed)  # and now the rewrite succeeds
    w0 = dg.graph.node_by_name["Conv_0"].inputs[1]
    assert pruned.params[w0].shape[0] == 1


def test_keep_every_end_alive_leaves_safe_plans_alone():
    dg = DependencyGraph(onnx_in.from_model(residual()))
    group = dg.group_of("Conv_1")  # 4 channels
    plan = Plan((GroupDecision(group.id, "r", 4, (0, 2)),))
    assert keep_every_end_alive(dg, plan) == plan
    fixed = keep_every_end_alive(dg, Plan((GroupDecision(group.id, "r", 4, (0, 1, 2, 3)),)))
    assert fixed.decisions[0].removed == (1, 2, 3)


def test_keep_every_end_alive_drops_decisions_left_empty():
    b = GraphBuilder(seed=0)
    y = b.relu(b.conv(b.input("input", [1, 3, 4, 4]), 1))  # a single-channel layer
    b.output(b.rename(b.conv(b.relu(b.conv(y, 4)), 2), "output"))
    dg = DependencyGraph(onnx_in.from_model(b.build()))
    single, four = dg.group_of("Conv_0"), dg.group_of("Conv_1")
    assert single.size == 1 and not single.prunable
    plan = Plan((GroupDecision(single.id, "r", 1, (0,)), GroupDecision(four.id, "r", 4, (3,))))
    assert keep_every_end_alive(dg, plan).decisions == (plan.decisions[1],)
    assert [(d.group, len(d.removed)) for d in make_plan(dg, ratio=0.9).decisions] == [(four.id, 3)]


def test_applying_a_plan_that_empties_a_tensor_is_refused(dg):
    with pytest.raises(PlanError, match="every channel"):
        apply_plan(dg, Plan((GroupDecision(0, "r", 8, tuple(range(8))),)))


def test_stale_plans_are_refused(dg):
    with pytest.raises(PlanError, match="group 7"):
        apply_plan(dg, Plan((GroupDecision(7, "r", 8, (0,)),)))
    with pytest.raises(PlanError, match="has 8 channels"):
        apply_plan(dg, Plan((GroupDecision(0, "r", 16, (0,)),)))
    with pytest.raises(PlanError, match="not prunable"):
        apply_plan(dg, Plan((GroupDecision(2, "r", 10, (0,)),)))
