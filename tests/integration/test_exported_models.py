"""The exported Transformer / RNN / GCN models (tests/models): they run, and what onnxprune prunes in them.

``TODAY`` records, per model, the prunable groups and the MACs ratio at
``--ratio 0.5`` with default options and no ``--input-shape`` (batch,
sequence, node and edge counts stay symbolic), as measured: floors, raise them
as rules land, never lower them. Issue 9's goal, MACs <= 0.6 with default
options, is asserted on every model but the decomposed-LayerNorm fixture,
whose only group runs through the norm's statistics (hidden size: opt-in,
``--prune-hidden`` halves it, see test_transformer_pruning.py).
"""
import numpy as np
import onnx
import pytest

from onnxprune import Pruner
from support.exported import exported_models
from support.oracle import assert_valid_at_both_lengths, run

MODELS = {m.name: m for m in exported_models()}

# name: (prunable groups at least, MACs ratio at most), default options, no input shapes
TODAY = {
    "bert_ts": (6, 0.501), "bert_dynamo": (6, 0.501),
    "vit_ts": (5, 0.527), "vit_dynamo": (5, 0.527),
    "gpt2_ts": (5, 0.557), "gpt2_dynamo": (5, 0.557),
    "llama_ts": (5, 0.572), "llama_dynamo": (5, 0.572),
    "swin_ts": (4, 0.566), "swin_dynamo": (4, 0.566),
    "bilstm_ts": (2, 0.267), "bilstm_dynamo": (2, 0.267),
    "gru_ts": (3, 0.269), "gru_dynamo": (3, 0.269),
    "gcn_ts": (1, 0.504), "gcn_dynamo": (1, 0.504),
    "decomposed_layernorm_ts": (1, 1.0), "decomposed_layernorm_dynamo": (1, 1.0),
    "tv_vit_ts": (5, 0.527), "tv_vit_dynamo": (5, 0.527),
    "char_transformer_ts": (5, 0.555), "char_transformer_dynamo": (5, 0.555),
    "tv_swin_ts": (8, 0.547), "tv_swin_dynamo": (7, 0.547),
}
DEFAULT_MACS_GOAL = 0.6  # issue 9
ARCHS = {"bert", "vit", "gpt2", "llama", "swin", "bilstm", "gru", "gcn", "decomposed_layernorm", "tv_vit",
         "char_transformer", "tv_swin"}


def test_every_architecture_is_committed_and_small():
    assert {m.arch for m in MODELS.values()} == ARCHS
    assert set(TODAY) == set(MODELS)
    assert {(m.arch, m.exporter) for m in MODELS.values()} == {(a, e) for a in ARCHS for e in ("ts", "dynamo")}
    for m in MODELS.values():
        assert m.load().ByteSize() < 300 * 1024, m.name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_runs_at_two_lengths(name):
    """Dynamic axes really are dynamic: both sizes run, and outputs follow the length."""
    model = MODELS[name]
    onnx.checker.check_model(model.load(), full_check=True)
    outs = [run(model.load(), model.feeds(k)) for k in (0, 1)]
    assert all(np.isfinite(o).all() for out in outs for o in out)
    assert [o.shape for o in outs[0]] != [o.shape for o in outs[1]]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prunes_half_without_input_shapes(name):
    """Ratio 0.5, default options, symbolic dims: valid, same output shapes at both lengths, dynamic inputs kept."""
    model = MODELS[name]
    pruner = Pruner.from_model(model.load())
    groups = len(pruner.prunable_groups())
    macs_before = pruner.macs()
    pruner.prune(ratio=0.5)
    pruned = pruner.to_model()
    assert_valid_at_both_lengths(model, pruned)
    assert _declared_dims(pruned.graph.input) == _declared_dims(model.load().graph.input)
    min_groups, max_macs = TODAY[name]
    ratio = pruner.macs() / macs_before
    assert groups >= min_groups, [g.describe() for g in pruner.groups]
    assert ratio <= max_macs, ratio
    if model.arch != "decomposed_layernorm":
        assert ratio <= DEFAULT_MACS_GOAL, ratio


def _declared_dims(values):
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values]
