"""Models as onnxruntime's transformer optimizer leaves them (fused contrib ops), pruned.

``onnxruntime.transformers.optimizer`` (shipped with onnxruntime) rewrites the exported
test models the way optimum's ORT exports look: SkipLayerNormalization, BiasGelu or
FastGelu, fused Attention, and for LLaMA onnxruntime's default-domain
SimplifiedLayerNormalization with SkipSimplifiedLayerNormalization. Heads and MLP
width prune like zeroing at two lengths; the hidden size goes through the fused norms'
statistics, only with prune_hidden; fused Attention keeps its heads.
"""
from collections import Counter

import numpy as np
import onnx
import pytest

from onnxprune import Pruner, onnx_out
from onnxprune.masking import mask_group
from onnxprune.validate import check
from support.exported import by_name, make_feeds
from support.oracle import prune_channels, run

# model -> (optimizer model type, fused ops it must contain, prunable groups by kind)
CASES = {
    "bert_ts": ("bert", {"com.microsoft:Attention", "com.microsoft:SkipLayerNormalization",
                         "com.microsoft:BiasGelu", "com.microsoft:EmbedLayerNormalization"},
                {"hidden": 1, "channels": 3}),  # MLP x2 and the pooler; fused Attention keeps its heads
    "gpt2_ts": ("gpt2", {"com.microsoft:SkipLayerNormalization", "com.microsoft:FastGelu"},
                {"hidden": 1, "heads": 2, "channels": 2}),
    "llama_ts": ("gpt2", {"SimplifiedLayerNormalization", "com.microsoft:SkipSimplifiedLayerNormalization"},
                 {"hidden": 1, "heads": 2, "channels": 2}),
}
SIZES = ((1, 7), (2, 12))


def _fused(name: str) -> onnx.ModelProto:
    from onnxruntime.transformers.optimizer import optimize_model
    model_type = CASES[name][0]
    optimized = optimize_model(by_name(name).path, model_type=model_type, num_heads=4, hidden_size=32, opt_level=0)
    model = optimized.model
    if not any(o.domain == "com.microsoft" for o in model.opset_import):  # as its save_model_to_file adds it
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return model


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_transformers_prune_heads_and_mlp_like_zeroing_and_hidden_only_when_asked(name):
    model = _fused(name)
    ops = {f"{n.domain}:{n.op_type}" if n.domain else n.op_type for n in model.graph.node}
    assert CASES[name][1] <= ops, sorted(ops)
    pruner = Pruner.from_model(model)
    assert dict(Counter(g.kind for g in pruner.prunable_groups())) == CASES[name][2]
    dg = pruner.depgraph
    for group in pruner.prunable_groups():
        if group.kind == "hidden":
            assert dg.inexact_nodes(group)
            continue
        channels = tuple(range(0, group.size, 2))
        pruned = prune_channels(dg, group, channels)
        masked = onnx_out.to_model(mask_group(dg, group, channels))
        for batch, length in SIZES:
            feeds = make_feeds(model, batch, length)
            for e, a in zip(run(masked, feeds), run(pruned, feeds)):
                np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4, err_msg=group.describe())
    for hidden in (False, True):
        pruner = Pruner.from_model(model)
        groups = pruner.groups  # the plan's group ids are those of the analysed model
        plan = pruner.prune(ratio=0.5, prune_hidden=hidden)
        pruned_kinds = {groups[d.group].kind for d in plan.decisions}
        assert ("hidden" in pruned_kinds) == (hidden and "hidden" in CASES[name][2]), pruned_kinds
        pruned = pruner.to_model()
        check(pruned)
        for batch, length in SIZES:
            feeds = make_feeds(model, batch, length)
            assert [a.shape for a in run(pruned, feeds)] == [o.shape for o in run(model, feeds)]
