"""The zeroed-channels oracle on exported RNN and graph models (tests/models), at two lengths.

Each prunable group is analysed with the first test length as the input
shape; its every-other-channel prune must equal the original with those
channels zeroed, and the pruned model must still run at the second length
(its dynamic axes kept).
"""
import pytest

from onnxprune import onnx_in
from onnxprune.depgraph import DependencyGraph
from support.exported import by_name
from support.oracle import assert_group_oracle, prune_channels, run

# model: prunable groups expected (hidden units / features found by the RNN and indexing rules)
EXPECTED = {"bilstm_ts": 2, "gru_ts": 3, "gcn_ts": 1, "gcn_dynamo": 1}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_oracle_every_group_at_two_lengths(name):
    model = by_name(name)
    feeds = model.feeds(0)
    dg = DependencyGraph(onnx_in.from_model(model.load(), {k: list(v.shape) for k, v in feeds.items()}))
    groups = dg.prunable_groups()
    assert len(groups) == EXPECTED[name], [g.describe() for g in dg.groups]
    longer = model.feeds(1)
    reference = [o.shape for o in run(model.load(), longer)]
    for group in groups:
        assert not dg.inexact_nodes(group)
        channels = tuple(range(0, group.size, 2))
        assert_group_oracle(dg, group, channels, feeds)
        assert [o.shape for o in run(prune_channels(dg, group, channels), longer)] == reference


def test_bilstm_hidden_group_spans_both_directions_and_states():
    model = by_name("bilstm_ts")
    feeds = model.feeds(0)
    dg = DependencyGraph(onnx_in.from_model(model.load(), {k: list(v.shape) for k, v in feeds.items()}))
    hidden = dg.group_of("/lstm/LSTM")
    assert hidden.size == 12 and hidden.prunable
    ops = {dg.graph.node_by_name[e.node].op_type for e in hidden.ends if e.node}
    assert {"LSTM", "Transpose", "Reshape", "Gather", "Concat", "MatMul", "Gemm"} <= ops
    # channel 0 is unit 0 of both directions: rows 0, 12, 24, 36 of W, and columns 0 and 12 of the tagger
    tagger = next(e for e in hidden.ends if e.kind == "param" and e.tensor.startswith("onnx::MatMul"))
    assert list(hidden.channels[0][tagger]) == [0, 12]
