"""Saved recipes: every edit, in order, each on the graph of its time, re-applies to the input."""
import numpy as np
import pytest

from onnxprune.api import Pruner
from onnxprune.errors import PlanError
from onnxprune.plan import Plan
from onnxprune.recipe import Recipe
from support.architectures import ARCHITECTURES
from support.oracle import random_feeds, run


def _same_model(a: Pruner, b: Pruner, model):
    feeds = random_feeds(model)
    for x, y in zip(run(a.to_model(), feeds), run(b.to_model(), feeds)):
        np.testing.assert_array_equal(x, y)
    assert (a.params(), a.macs()) == (b.params(), b.macs())


def test_a_single_plan_is_saved_as_the_plain_plan_json():
    model = ARCHITECTURES["resnet_basic"]()
    pruner = Pruner.from_model(model)
    plan = pruner.prune(ratio=0.5)
    text = pruner.recipe.to_json()
    assert Plan.from_json(text) == plan
    again = Pruner.from_model(model)
    again.replay(Recipe.from_json(text))
    _same_model(pruner, again, model)


def test_separate_prunes_replay_in_order():
    """Two prunes, the second on the graph the first left: saved as two steps, each re-applied
    on the graph of its time (no single plan on the original exists for group ids that moved)."""
    model = ARCHITECTURES["mobilenetv2"]()
    pruner = Pruner.from_model(model)
    pruner.prune(ratio=0.3)
    pruner.prune(ratio=0.3, criterion="l1")
    text = pruner.recipe.to_json()
    recipe = Recipe.from_json(text)
    assert [s.kind for s in recipe.steps] == ["channels", "channels"]
    again = Pruner.from_model(model)
    again.replay(recipe)
    _same_model(pruner, again, model)


def test_steps_are_one_composed_plan_in_the_recipe():
    model = ARCHITECTURES["resnet_basic"]()
    pruner = Pruner.from_model(model)
    composed = pruner.prune(ratio=0.5, steps=3)
    assert composed is not None and len(pruner.recipe.steps) == 1 and pruner.recipe.steps[0].payload == composed


@pytest.mark.parametrize("text, message", [("{", "bad JSON"), ('{"format": "x"}', "not a plan file"),
                                           ('{"format": "onnxprune-recipe", "steps": [{"kind": "warp"}]}',
                                            "unknown")])
def test_bad_recipe_files_say_what_is_wrong(text, message):
    with pytest.raises(PlanError, match=message):
        Recipe.from_json(text)


def test_fusion_after_a_prune_replays():
    model = ARCHITECTURES["resnet_basic"]()
    pruner = Pruner.from_model(model)
    pruner.prune(ratio=0.5)
    assert pruner.fuse().changed
    recipe = Recipe.from_json(pruner.recipe.to_json())
    assert [s.kind for s in recipe.steps] == ["channels", "fuse"]
    again = Pruner.from_model(model)
    again.replay(recipe)
    _same_model(pruner, again, model)
