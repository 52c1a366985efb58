"""The Python API: Pruner load / inspect / prune / save, and ensure_distinct."""
import os

import numpy as np
import onnx
import pytest

from onnxprune import Pruner, PruneOptions
from onnxprune.api import ensure_distinct
from onnxprune.errors import InputError, PlanError, UnsupportedModelError, ValidationError
from support.oracle import random_feeds, run
from support.small_models import conv_chain, custom_domain, residual, save


def weight(pruner, node, slot=1):
    return pruner.graph.params[pruner.graph.node_by_name[node].inputs[slot]]


def test_load_and_from_model_agree(tmp_path):
    model = conv_chain()
    a, b = Pruner.load(save(model, tmp_path / "m.onnx")), Pruner.from_model(model)
    assert [g.describe() for g in a.groups] == [g.describe() for g in b.groups]
    assert a.params() == b.params() > 0 and a.macs() == b.macs() > 0
    assert len(a.prunable_groups()) == 2


def test_load_refuses_what_the_loader_refuses(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        Pruner.load(tmp_path / "nope.onnx")
    with pytest.raises(UnsupportedModelError):
        Pruner.from_model(custom_domain())


def test_prune_group_removes_exactly_those_channels():
    pruner = Pruner.from_model(conv_chain())
    w0, b0, w1 = weight(pruner, "Conv_0"), weight(pruner, "Conv_0", 2), weight(pruner, "Conv_1")
    gemm = weight(pruner, "Gemm_0").copy()
    pruner.prune_group(pruner.group_of("Conv_0"), [6, 1, 3])
    keep = [0, 2, 4, 5, 7]
    np.testing.assert_array_equal(weight(pruner, "Conv_0"), w0[keep])
    np.testing.assert_array_equal(weight(pruner, "Conv_0", 2), b0[keep])
    np.testing.assert_array_equal(weight(pruner, "Conv_1"), w1[:, keep])
    np.testing.assert_array_equal(weight(pruner, "Gemm_0"), gemm)  # other groups untouched
    assert pruner.graph.values["Conv_0"].shape == (1, 5, 8, 8)
    assert pruner.group_of("Conv_0").size == 5 and pruner.group_of("Conv_1").size == 6
    assert [d.removed for d in pruner.plans[0].decisions] == [(1, 3, 6)]


def test_prune_group_on_a_residual_shrinks_both_producers():
    pruner = Pruner.from_model(residual())
    pruner.prune_group(pruner.group_of("Conv_2"), [0, 7])
    assert weight(pruner, "Conv_0").shape[0] == weight(pruner, "Conv_2").shape[0] == 6
    assert weight(pruner, "Conv_1").shape[1] == weight(pruner, "Conv_3").shape[1] == 6
    assert pruner.graph.values["Add_0"].shape == (1, 6, 8, 8)


def test_repeated_prune_calls_work():
    model = conv_chain()
    pruner = Pruner.from_model(model)
    params0, macs0 = pruner.params(), pruner.macs()
    pruner.prune(ratio=0.5)
    assert weight(pruner, "Conv_0").shape[0] == 4 and weight(pruner, "Conv_1").shape[0] == 3
    pruner.prune(ratio=0.5)
    assert weight(pruner, "Conv_0").shape[0] == 2 and weight(pruner, "Conv_1").shape[0] == 2
    pruner.prune_group(pruner.group_of("Conv_0"), [1])
    assert weight(pruner, "Conv_0").shape[0] == 1
    assert len(pruner.plans) == 3
    assert pruner.params() < params0 and pruner.macs() < macs0
    pruner.prune(ratio=0.5)  # a single channel left: nothing more to remove there
    assert weight(pruner, "Conv_0").shape[0] == 1
    out = pruner.to_model()
    onnx.checker.check_model(out, full_check=True)
    feeds = random_feeds(model)
    assert run(out, feeds)[0].shape == run(model, feeds)[0].shape
    assert pruner.validate(runs=0).shapes_match  # still compared with the original model


def test_prune_options_and_kwargs_are_equivalent():
    a, b = Pruner.from_model(conv_chain()), Pruner.from_model(conv_chain())
    plan_a = a.prune(PruneOptions(ratio=0.25, criterion="l1", ignore=["Conv_1"], round_to=1))
    plan_b = b.prune(ratio=0.25, criterion="l1", ignore=["Conv_1"], round_to=1)
    assert plan_a == plan_b and [d.group for d in plan_a.decisions] == [0]
    assert weight(a, "Conv_1").shape[0] == 6


def test_a_plan_can_be_inspected_before_it_is_applied():
    pruner = Pruner.from_model(conv_chain())
    plan = pruner.plan(ratio=0.5)
    assert pruner.plans == [] and weight(pruner, "Conv_0").shape[0] == 8
    pruner.apply(plan)
    assert pruner.plans == [plan] and weight(pruner, "Conv_0").shape[0] == 4
    with pytest.raises(PlanError):
        pruner.apply(plan)  # stale: group 0 now has 4 channels
    with pytest.raises(PlanError):
        pruner.plan(ratio=1.0)


def test_save_writes_a_checked_model(tmp_path):
    pruner = Pruner.from_model(conv_chain())
    pruner.prune(ratio=0.5)
    path = tmp_path / "sub" / "pruned.onnx"
    pruner.save(path)
    written = onnx.load(str(path))
    onnx.checker.check_model(written, full_check=True)
    inits = {t.name: list(t.dims) for t in written.graph.initializer}
    assert inits[written.graph.node[0].input[1]] == [4, 3, 3, 3]
    assert sorted(os.listdir(tmp_path / "sub")) == ["pruned.onnx"]  # no temp files left behind


def test_save_refuses_a_broken_model_and_writes_nothing(tmp_path):
    pruner = Pruner.from_model(conv_chain())
    pruner.graph.nodes[1].inputs[0] = "undefined_tensor"
    with pytest.raises(ValidationError, match="onnx.checker"):
        pruner.save(tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_ensure_distinct_catches_other_spellings_and_links(tmp_path, monkeypatch):
    src = save(conv_chain(), tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    for dst in (src, "m.onnx", "./m.onnx", str(tmp_path / "sub" / ".." / "m.onnx")):
        with pytest.raises(InputError, match="is the input file"):
            ensure_distinct("m.onnx", dst)
    os.symlink(src, tmp_path / "link.onnx")
    with pytest.raises(InputError, match="is the input file"):
        ensure_distinct(src, "link.onnx")
    with pytest.raises(InputError, match="is a directory"):
        ensure_distinct(src, str(tmp_path))
    ensure_distinct(src, "other.onnx")  # fine
