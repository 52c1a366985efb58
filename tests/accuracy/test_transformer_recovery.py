"""Heads, MLP and hidden-size groups of exported Transformers with data-driven criteria and recovery."""
import numpy as np
import pytest

from onnxprune import Pruner
from onnxprune.validate import check
from support.exported import exported_models
from support.oracle import run

MODELS = {m.name: m for m in exported_models()}


@pytest.mark.parametrize("name,hidden", [("llama_ts", True), ("bert_dynamo", True), ("gpt2_ts", False)])
def test_pruned_transformer_groups_score_on_data_and_recover_without_getting_worse(name, hidden):
    model = MODELS[name]
    pruner = Pruner.from_model(model.load())
    data = pruner.random_inputs(24, seed=1)
    fit, _ = data.split(0.25, 0)
    kind_of = {g.id: g.kind for g in pruner.prunable_groups()}
    pruner.prune(ratio=0.5, prune_hidden=hidden, criterion="output", data=fit)
    pruned_kinds = {kind_of[d.group] for d in pruner.plans[-1].decisions if d.removed}
    assert {"heads", "channels"} <= pruned_kinds and (("hidden" in pruned_kinds) == hidden), pruned_kinds
    result = pruner.recover(data)
    assert result.fidelity_after is not None and result.fidelity_before is not None
    after, before = (max(o.rel_l2 for o in f.outputs) for f in (result.fidelity_after, result.fidelity_before))
    assert not result.kept or after <= before + 1e-9
    if result.kept:
        assert any(p["changed"] for p in result.passes)  # recovery really re-fitted something
    recovered = pruner.to_model()
    check(recovered)
    for k in (0, 1):
        feeds = model.feeds(k)
        assert [o.shape for o in run(recovered, feeds)] == [o.shape for o in run(model.load(), feeds)]
