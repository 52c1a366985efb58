"""Importance criteria: group-level scores over every coupled parameter."""
import numpy as np
import pytest

from onnxprune import onnx_in
from onnxprune.depgraph import DependencyGraph
from onnxprune.importance import CRITERIA, roles_in
from onnxprune.plan import make_plan
from onnxprune.scoring import ScoringContext
from support.small_models import conv_chain

BIG, TINY = 3, 5  # channels of Conv_0 made important / unimportant


def scores(dg, criterion, group=None, seed=0):
    group = group or dg.group_of("Conv_0")
    return CRITERIA[criterion](ScoringContext(dg, np.random.default_rng(seed)), group)


def edited(bn=True, weight_scale=None, gamma_scale=None):
    """conv_chain with Conv_0's weight row / BN gamma entry scaled."""
    graph = onnx_in.from_model(conv_chain(bn=bn))
    params = dict(graph.params)
    if weight_scale:
        name = graph.node_by_name["Conv_0"].inputs[1]
        w = params[name].copy()
        w[weight_scale[0]] *= weight_scale[1]
        params[name] = w
    if gamma_scale:
        name = graph.node_by_name["BatchNormalization_0"].inputs[1]
        g = params[name].copy()
        g[gamma_scale[0]] *= gamma_scale[1]
        params[name] = g
    graph.params.clear()
    graph.params.update(params)
    return DependencyGraph(graph)


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_norms_rank_a_scaled_up_channel_most_important(criterion):
    dg = edited(weight_scale=(BIG, 100.0))
    s = scores(dg, criterion)
    assert s.shape == (8,) and np.all(np.isfinite(s))
    assert int(np.argmax(s)) == BIG
    removed = make_plan(dg, ratio=0.75, criterion=criterion).decisions[0].removed
    assert BIG not in removed


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_norms_rank_a_zeroed_channel_least_important(criterion):
    dg = edited(weight_scale=(TINY, 0.0))
    assert int(np.argmin(scores(dg, criterion))) == TINY
    assert TINY in make_plan(dg, ratio=0.125, criterion=criterion, round_to=1).decisions[0].removed  # the single channel removed


def test_l1_and_l2_differ_on_the_same_weights():
    dg = DependencyGraph(onnx_in.from_model(conv_chain()))
    l1, l2 = scores(dg, "l1"), scores(dg, "l2")
    assert not np.allclose(l1, l2)


def test_every_member_counts_equally_whatever_its_scale():
    """Scaling one whole parameter tensor must not change the ranking."""
    base = scores(DependencyGraph(onnx_in.from_model(conv_chain())), "l2")
    graph = onnx_in.from_model(conv_chain())
    name = graph.node_by_name["Conv_1"].inputs[1]
    graph.params[name] = graph.params[name] * 1000
    np.testing.assert_allclose(scores(DependencyGraph(graph), "l2"), base, rtol=1e-6)


def test_bn_scale_uses_gamma_magnitude():
    # channel TINY has a large conv weight (L2 would keep it) but a tiny gamma
    dg = edited(weight_scale=(TINY, 100.0), gamma_scale=(TINY, 1e-4))
    assert int(np.argmax(scores(dg, "l2"))) == TINY
    s = scores(dg, "bn-scale")
    assert int(np.argmin(s)) == TINY
    assert make_plan(dg, ratio=0.125, criterion="bn-scale", round_to=1).decisions[0].removed == (TINY,)
    gamma = np.abs(dg.graph.params[dg.graph.node_by_name["BatchNormalization_0"].inputs[1]])
    assert list(np.argsort(s)) == list(np.argsort(gamma))  # |gamma| alone decides


def test_bn_scale_flips_sign_blind():
    dg = edited(gamma_scale=(BIG, -50.0))  # a large negative gamma is important
    assert int(np.argmax(scores(dg, "bn-scale"))) == BIG


def test_bn_scale_finds_the_bn_role_only_where_there_is_one():
    dg = DependencyGraph(onnx_in.from_model(conv_chain()))
    gamma = dg.graph.node_by_name["BatchNormalization_0"].inputs[1]
    assert [e.tensor for e in roles_in(dg, dg.group_of("Conv_0"), "bn_scale")] == [gamma]
    assert roles_in(dg, dg.group_of("Conv_1"), "bn_scale") == []


def test_bn_scale_falls_back_to_l2_without_bn():
    dg = DependencyGraph(onnx_in.from_model(conv_chain(bn=False)))
    for group in dg.prunable_groups():
        np.testing.assert_array_equal(scores(dg, "bn-scale", group), scores(dg, "l2", group))
    # and in a model with BN, a group without BN (Conv_1) also falls back
    dg = DependencyGraph(onnx_in.from_model(conv_chain()))
    np.testing.assert_array_equal(scores(dg, "bn-scale", dg.group_of("Conv_1")),
                                  scores(dg, "l2", dg.group_of("Conv_1")))


def test_random_is_seeded():
    dg = DependencyGraph(onnx_in.from_model(conv_chain()))
    a, b, c = scores(dg, "random", seed=7), scores(dg, "random", seed=7), scores(dg, "random", seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (8,) and np.all((a >= 0) & (a < 1))


def test_criteria_names():
    assert {"l1", "l2", "bn-scale", "random", "activation", "output", "reconstruction"} <= set(CRITERIA)
    assert not any(CRITERIA[name].data_driven for name in ("l1", "l2", "bn-scale", "random"))
    assert all(CRITERIA[name].data_driven for name in ("activation", "output", "reconstruction"))
