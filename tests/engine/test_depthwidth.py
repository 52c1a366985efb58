"""--target-latency searches depth and width together (onnxprune.depthwidth), with injected latency models."""
import json

import numpy as np
import pytest

from onnxprune.api import Pruner
from onnxprune.depthwidth import Candidate, ladder, pick
from onnxprune.errors import PlanError
from onnxprune.latency import RatioSpread
from onnxprune.metrics import count_macs
from onnxprune.options import LatencyOptions, PruneOptions
from onnxprune.plan import Plan
from onnxprune.recipe import BLOCKS, CHANNELS, Recipe
from onnxprune.targets import TOLERANCE, SearchResult
from support.architectures import ARCHITECTURES
from support.oracle import random_feeds, run


def spread(ratio: float, half: float = 0.02) -> RatioSpread:
    return RatioSpread(ratio, (ratio - half, ratio + half), (ratio - half / 2, ratio + half / 2))


class LatencyModel:
    """A fake provider: latency is MACs, except that the MACs of a removed block save ``depth_price``
    times as much latency as the same MACs thinned away (above 1: launch-bound, fewer layers pay).
    Every graph it is asked about is kept, to check what was timed."""

    def __init__(self, model, depth_price: float):
        base = Pruner.from_model(model)
        self.registry, self.price = base.registry, depth_price
        self.macs0 = count_macs(base.graph, base.registry)
        self.blocks = base.blocks().blocks
        self.calls: list[int] = []

    def ratio(self, graph) -> float:
        names = {n.name for n in graph.nodes}
        removed = sum(b.macs for b in self.blocks if b.join not in names)
        return (count_macs(graph, self.registry) - (self.price - 1) * removed) / self.macs0

    def __call__(self, graphs):
        self.calls.append(len(graphs))
        return [spread(self.ratio(g)) for g in graphs]


@pytest.mark.parametrize("price,deep", [(1.5, True), (0.3, False)])
def test_the_search_takes_depth_where_it_is_cheaper_per_mac_and_width_where_width_is(price, deep):
    model = ARCHITECTURES["resnet_basic"]()
    fake = LatencyModel(model, price)
    pruner = Pruner.from_model(model)
    macs0 = pruner.macs()
    plan = pruner.prune(PruneOptions(target_latency=0.5, round_to=1), graph_latency=fake)
    search = pruner.searches[-1]
    found = search.depth_width
    assert found is not None and len(found.candidates) >= 2 and found.proxy == "MACs kept"
    assert found.candidates[0].depth == 0  # width only is always a candidate
    chosen = found.chosen
    assert chosen.meets(0.5) and fake.ratio(pruner.graph) <= 0.5 + TOLERANCE
    # the winner keeps the most MACs of those that meet the target
    assert chosen.macs == max(c.macs for c in found.candidates if c.meets(0.5))
    assert chosen.macs == pytest.approx(pruner.macs() / macs0)
    if deep:
        assert chosen.depth > 0 and plan.decisions  # depth and width together
        assert len(pruner.removed_blocks) == chosen.depth
    else:
        assert chosen.depth == 0 and not pruner.removed_blocks
    assert fake.calls[-1] == len(found.candidates)  # every candidate timed in one side-by-side measurement
    out = run(pruner.to_model(), random_feeds(pruner.to_model()))
    assert all(np.all(np.isfinite(o)) for o in out)


def test_the_saved_recipe_holds_the_chosen_depth_and_width_and_re_applies():
    model = ARCHITECTURES["resnet_basic"]()
    pruner = Pruner.from_model(model)
    pruner.prune(PruneOptions(target_latency=0.5, round_to=1), graph_latency=LatencyModel(model, 1.5))
    kinds = [s.kind for s in pruner.recipe.steps]
    assert kinds == [BLOCKS, CHANNELS]
    again = Pruner.from_model(model)
    again.replay(Recipe.from_json(pruner.recipe.to_json()))
    feeds = random_feeds(model)
    for a, b in zip(run(pruner.to_model(), feeds), run(again.to_model(), feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_depth_alone_meeting_the_target_stops_the_ladder_with_no_width_removed():
    model = ARCHITECTURES["resnet_basic"]()
    fake = LatencyModel(model, 1.5)  # one block (a quarter of the MACs) alone: x0.61
    pruner = Pruner.from_model(model)
    plan = pruner.prune(PruneOptions(target_latency=0.7, round_to=1), graph_latency=fake)
    found = pruner.searches[-1].depth_width
    assert [c.depth for c in found.candidates] == [0, 1]  # the ladder (0..3) stopped at 1
    assert not found.candidates[-1].search.plan.decisions
    assert found.chosen.meets(0.7)
    assert [s.kind for s in pruner.recipe.steps] == ([BLOCKS] if found.chosen.depth else [CHANNELS])
    assert bool(plan.decisions) == (found.chosen.depth == 0)


def test_with_data_the_cosine_ranks_the_candidates():
    model = ARCHITECTURES["resnet_basic"]()
    pruner = Pruner.from_model(model)
    data = pruner.random_inputs(8)
    pruner.prune(PruneOptions(target_latency=0.7, round_to=1, depth_score="weights"), data=data,
                 graph_latency=LatencyModel(model, 1.5))
    found = pruner.searches[-1].depth_width
    assert found.proxy.startswith("worst-output cosine on 8")
    assert all(c.cosine is not None and -1 <= c.cosine <= 1 for c in found.candidates)
    meeting = [c for c in found.candidates if c.meets(0.7)]
    assert found.chosen.cosine == max(c.cosine for c in meeting)
    assert found.chosen.cosine == pytest.approx(pruner.fidelity(data.take(16)).cosine, abs=1e-6)


def test_without_blocks_the_search_is_width_only():
    model = ARCHITECTURES["plain_cnn"]()
    pruner = Pruner.from_model(model)
    pruner.prune(PruneOptions(target_latency=0.6, round_to=1), graph_latency=LatencyModel(model, 1.0))
    found = pruner.searches[-1].depth_width
    assert [c.depth for c in found.candidates] == [0] and found.chosen.meets(0.6)


def test_depth_search_off_and_fixed_depth_keep_the_old_width_search():
    model = ARCHITECTURES["resnet_basic"]()
    for options in (PruneOptions(target_latency=0.6, round_to=1, depth_search=False),
                    PruneOptions(target_latency=0.6, round_to=1, depth=1)):
        pruner = Pruner.from_model(model)
        pruner.prune(options, graph_latency=LatencyModel(model, 1.5))
        assert pruner.searches[-1].depth_width is None
        assert len(pruner.removed_blocks) == options.depth


def _replayed(model, pruner):
    again = Pruner.from_model(model)
    again.replay(Recipe.from_json(pruner.recipe.to_json()))
    return again.to_model().SerializeToString()


@pytest.mark.parametrize("steps", [2, 3])
def test_with_steps_each_round_searches_depth_and_width_toward_its_share_of_the_target(steps):
    """--steps K with --target-latency: round i aims at 1 - (1 - target) * i / K of the original's latency
    (as --target-macs does), depth and width searched together in each round on the model the last one
    left, every candidate timed against the original; the last round meets the target."""
    model = ARCHITECTURES["resnet_basic"]()
    fake = LatencyModel(model, 1.5)
    pruner = Pruner.from_model(model)
    rounds = []
    plan = pruner.prune(PruneOptions(target_latency=0.5, round_to=1, steps=steps), graph_latency=fake,
                        after_step=lambda p, step: rounds.append((step, fake.ratio(p.graph))))
    assert [s for s, _ in rounds] == list(range(1, steps + 1))
    assert len(pruner.searches) == steps and all(s.depth_width is not None for s in pruner.searches)
    for i, (search, (_, reached)) in enumerate(zip(pruner.searches, rounds), 1):
        share = 1 - 0.5 * i / steps
        assert search.target == pytest.approx(share)
        assert search.depth_width.chosen.meets(share)
        assert reached <= share + TOLERANCE  # the model after round i, as the fake provider times it
        assert reached == pytest.approx(search.reached)
    assert rounds[-2][1] > rounds[-1][1]  # each round went further
    if steps == 2:  # depth is cheaper per MAC on this provider: the second round takes a block
        assert [s.depth_width.chosen.depth for s in pruner.searches] == [0, 1]
    deep = [s for s in pruner.searches if s.depth_width.chosen.depth]
    assert len(pruner.removed_blocks) == sum(s.depth_width.chosen.depth for s in deep)
    assert [s.kind for s in pruner.recipe.steps].count(BLOCKS) == len(deep)
    # blocks went between rounds: no one plan on the original graph, the recipe holds each round's steps
    assert (plan is None) == bool(deep)
    assert _replayed(model, pruner) == pruner.to_model().SerializeToString()


def test_with_steps_rounds_that_take_width_only_compose_into_one_plan():
    model = ARCHITECTURES["resnet_basic"]()
    pruner = Pruner.from_model(model)
    plan = pruner.prune(PruneOptions(target_latency=0.5, round_to=1, steps=2), graph_latency=LatencyModel(model, 0.3))
    assert [s.depth_width.chosen.depth for s in pruner.searches] == [0, 0] and not pruner.removed_blocks
    assert [s.kind for s in pruner.recipe.steps] == [CHANNELS]  # the two rounds as one step on the original
    again = Pruner.from_model(model)
    again.apply(plan)
    assert again.to_model().SerializeToString() == pruner.to_model().SerializeToString()
    assert _replayed(model, pruner) == pruner.to_model().SerializeToString()


# ----------------------------------------------------------------------------- choosing
def _candidate(depth, latency, macs, cosine=None):
    search = SearchResult(Plan(()), "latency", 0.6, latency, 0.0, 1, 0.0)
    return Candidate(depth, (), search, macs, cosine, spread(latency) if latency is not None else None)


def test_pick_prefers_the_best_proxy_among_the_candidates_that_meet_the_target():
    a, b, c = _candidate(0, 0.60, 0.55), _candidate(2, 0.61, 0.70), _candidate(4, 0.50, 0.80)
    assert pick([a, b, c], 0.6) is c  # c overshoots but keeps the most MACs
    assert pick([a, b, _candidate(4, 0.70, 0.90)], 0.6) is b  # off target by more than the tolerance: out


def test_pick_never_returns_a_plan_that_is_not_faster_when_a_faster_one_exists():
    slower = _candidate(0, 1.05, 0.9)
    same = Candidate(1, (), slower.search, 0.95, None, RatioSpread(0.99, (0.95, 1.03), (0.97, 1.01)))
    faster = _candidate(2, 0.8, 0.5)
    assert pick([slower, same, faster], 0.6) is faster  # none meets 0.6: the fastest faster one
    assert pick([slower, same], 0.6) is same  # none faster: the fastest, flagged by its verdict
    assert pick([same, faster], 1.0) is faster  # 'same' is not measurably faster


def test_ladder_is_evenly_spaced_and_short():
    assert ladder(0) == [0] and ladder(1) == [0, 1] and ladder(3) == [0, 1, 2, 3]
    assert ladder(16) == [0, 4, 8, 12, 16] and len(ladder(100)) == 5


def test_out_of_reach_returns_the_fastest_plan_flagged_not_met():
    model = ARCHITECTURES["resnet_basic"]()
    pruner = Pruner.from_model(model)
    pruner.prune(PruneOptions(target_latency=0.01, round_to=1, max_ratio=0.2), graph_latency=LatencyModel(model, 1.0))
    found = pruner.searches[-1].depth_width
    assert not found.met and not pruner.searches[-1].to_dict()["depth_width"]["met"]
    assert found.chosen.latency.median == min(c.latency.median for c in found.candidates)
    assert found.candidates[0].depth > 0  # width alone (at most 20% of each group) is out of reach: no candidate


def test_out_of_reach_at_every_depth_fails_in_one_line():
    model = ARCHITECTURES["plain_cnn"]()
    with pytest.raises(PlanError, match="out of reach"):
        Pruner.from_model(model).prune(PruneOptions(target_latency=0.01, round_to=1, max_ratio=0.2),
                                       graph_latency=LatencyModel(model, 1.0))


def test_the_search_times_for_real_through_onnxruntime():
    """No assertion on the timings: only that real side-by-side measurements run and are recorded."""
    pruner = Pruner.from_model(ARCHITECTURES["resnet_basic"]())
    pruner.prune(PruneOptions(target_latency=0.7, width_grid="default",
                              latency=LatencyOptions(min_runs=4, max_seconds=0.2)))
    found = pruner.searches[-1].depth_width
    assert found.candidates and all(c.latency is not None for c in found.candidates)
    assert all(c.latency.ci95[0] <= c.latency.median <= c.latency.ci95[1] for c in found.candidates)
    json.dumps(pruner.searches[-1].to_dict())
    pruner.validate(runs=0)
