"""The zeroed-channels oracle on exported RNN and graph models (tests/models), at two lengths.

Each model is analysed without input shapes (sequence, batch, node and edge
counts symbolic, as users bring them); every prunable group's every-other-
channel prune must equal the original with those channels zeroed, at both test
lengths, so the rewritten model keeps its dynamic axes.
"""
import numpy as np
import pytest

from onnxprune import onnx_in
from onnxprune.depgraph import DependencyGraph
from support.exported import by_name, make_feeds
from support.oracle import assert_group_oracle, prune_channels, run

# model: prunable groups expected (hidden units / features found by the RNN and indexing rules);
# the dynamo exports emit ONNX LSTM / GRU too (weights re-ordered by Slice/Concat, folded at export)
EXPECTED = {"bilstm_ts": 2, "bilstm_dynamo": 2, "gru_ts": 3, "gru_dynamo": 3, "gcn_ts": 1, "gcn_dynamo": 1}


def _depgraph(name):
    return DependencyGraph(onnx_in.from_model(by_name(name).load()))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_oracle_every_group_at_two_lengths(name):
    model = by_name(name)
    dg = _depgraph(name)
    groups = dg.prunable_groups()
    assert len(groups) == EXPECTED[name], [g.describe() for g in dg.groups]
    for group in groups:
        assert not dg.inexact_nodes(group)
        channels = tuple(range(0, group.size, 2))
        for k in (0, 1):
            assert_group_oracle(dg, group, channels, model.feeds(k))


@pytest.mark.parametrize("name", ["bilstm_ts", "bilstm_dynamo"])
def test_bilstm_hidden_group_spans_both_directions_and_states(name):
    dg = _depgraph(name)
    lstm = next(n for n in dg.graph.nodes if n.op_type == "LSTM")
    hidden = dg.group_of(lstm.name)
    assert hidden.size == 12 and hidden.prunable
    ops = {dg.graph.node_by_name[e.node].op_type for e in hidden.ends if e.node}
    assert {"LSTM", "Transpose", "Reshape", "Gather", "Concat", "MatMul", "Gemm"} <= ops
    # channel 0 is unit 0 of both directions: columns 0 and 12 of the tagger's (24, 3) weight
    params = dg.graph.params
    tagger = next(e for e in hidden.ends if e.kind == "param" and params[e.tensor].shape == (24, 3))
    assert list(hidden.channels[0][tagger]) == [0, 12]


@pytest.mark.parametrize("name", ["gcn_ts", "gcn_dynamo"])
def test_gcn_feature_width_prunes_node_and_edge_axes_stay(name):
    """No input shapes: the node count is one symbol in x [nodes, F] and adj [nodes, nodes]; the GCN
    layer's 16 features prune, and the pruned model runs at other node and edge counts."""
    model = by_name(name)
    dg = _depgraph(name)
    (group,) = dg.prunable_groups()
    assert group.size == 16
    pruned = prune_channels(dg, group, tuple(range(8)))
    for nodes in (5, 9, 14):
        feeds = make_feeds(model.load(), 1, nodes, seed=nodes)
        shapes = [o.shape for o in run(model.load(), feeds)]
        got = run(pruned, feeds)
        assert [o.shape for o in got] == shapes and all(np.isfinite(o).all() for o in got)
