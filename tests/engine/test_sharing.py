"""Shared constants are untied for analysis and tied again on output."""
import numpy as np
import onnx

from onnxprune import Pruner
from support.builder import GraphBuilder
from support.oracle import random_feeds, run


def _two_convs_sharing_a_bias():
    """Two unrelated convs whose (equal) biases an exporter deduplicated into one initializer."""
    g = GraphBuilder()
    x = g.input("input", [1, 3, 8, 8])
    bias = g.const(np.zeros(8, dtype=np.float32), name="zeros8")
    a = g.op("Conv", [x, g.param([8, 3, 3, 3]), bias], pads=[1, 1, 1, 1])
    b = g.op("Conv", [g.relu(a), g.param([8, 8, 3, 3]), bias], pads=[1, 1, 1, 1])
    g.output(g.conv(g.relu(b), 4))
    return g.build()


def test_deduplicated_constant_does_not_couple_unrelated_layers():
    pruner = Pruner.from_model(_two_convs_sharing_a_bias())
    assert pruner.group_of("Conv_0") is not pruner.group_of("Conv_1")
    assert len(pruner.prunable_groups()) == 2


def test_copies_fold_back_when_equal_and_split_when_pruned_differently():
    model = _two_convs_sharing_a_bias()
    untouched = Pruner.from_model(model).to_model()
    assert [t.name for t in untouched.graph.initializer].count("zeros8") == 1
    assert len(untouched.graph.initializer) == len(model.graph.initializer)
    pruner = Pruner.from_model(model)
    pruner.prune_group(pruner.group_of("Conv_1"), [0, 1, 2])
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    biases = {n.name: n.input[2] for n in pruned.graph.node if n.name in ("Conv_0", "Conv_1")}
    assert biases["Conv_0"] == "zeros8" and biases["Conv_1"] != "zeros8"  # 8 and 5 channels now
    feeds = random_feeds(model)
    assert run(pruned, feeds)[0].shape == run(model, feeds)[0].shape
    assert pruner.params() < Pruner.from_model(model).params()
