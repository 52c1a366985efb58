"""The graph-edit layer: every pass returns an old -> new map, maps compose, and what comes
later (recovery) follows the maps, never names."""
from __future__ import annotations

import copy
import os

import numpy as np
import onnxruntime as ort
import pytest

from onnxprune import onnx_in, onnx_out
from onnxprune.api import Pruner
from onnxprune.edits import EditMap, GraphEditor
from onnxprune.ir import Graph, Node
from onnxprune.options import PruneOptions
from onnxprune.passes import Match, RewritePass, compose, run_passes
from support.builder import GraphBuilder
from support.exported import MODELS_DIR
from support.oracle import refit_without_duplicate


def _run(graph: Graph, feeds) -> list[np.ndarray]:
    model = onnx_out.to_model(graph)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _chain_with_identity():
    b = GraphBuilder(seed=1)
    x = b.input("x", [1, 3, 8, 8])
    c = b.conv(x, 4)
    i = b.op("Identity", [c])
    r = b.relu(i)
    b.output(b.rename(b.conv(r, 2), "y"))
    return b.build()


class DropIdentity:
    """A test rewrite: readers of an Identity read its input; refuses where the output is a graph output."""

    name = "drop identity"

    def find(self, graph):
        return [Match((n.name,)) for n in graph.nodes if n.op_type == "Identity"]

    def check(self, graph, match):
        node = graph.node_by_name[match.nodes[0]]
        return "its output is a graph output" if node.outputs[0] in graph.graph_output_names else None

    def rewrite(self, graph, match, editor):
        node = graph.node_by_name[match.nodes[0]]
        editor.remove_node(node.name)
        editor.reroute(node.outputs[0], node.inputs[0], same_values=True)
        editor.map_tensor(node.outputs[0], node.inputs[0])


def test_rewrite_pass_deletes_rewires_and_maps():
    model = _chain_with_identity()
    graph = onnx_in.from_model(model)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    new, results = run_passes(graph, [RewritePass(DropIdentity())])
    (result,) = results
    assert result.changed == 1 and not any(n.op_type == "Identity" for n in new.nodes)
    identity = next(n for n in graph.nodes if n.op_type == "Identity")
    edits = result.edits
    assert edits.nodes[identity.name] is None and identity.name in edits.deleted_nodes
    assert edits.tensors[identity.outputs[0]] == identity.inputs[0]
    assert not edits.changed  # exact: nothing holds other values
    np.testing.assert_allclose(_run(new, feeds)[0], _run(graph, feeds)[0], rtol=1e-6, atol=1e-6)
    assert any(n.op_type == "Identity" for n in graph.nodes)  # the input graph is untouched


def test_rewrite_check_refuses_with_a_reason():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 4, 4])
    b.output(b.rename(b.op("Identity", [b.conv(x, 2)]), "y"))
    graph = onnx_in.from_model(b.build())
    result = RewritePass(DropIdentity()).run(graph)
    assert result.changed == 0 and result.graph is graph
    assert len(result.refused) == 1 and "graph output" in result.refused[0]


def test_editor_drops_dead_code_and_maps_it_to_nothing():
    graph = onnx_in.from_model(_chain_with_identity())
    relu = next(n for n in graph.nodes if n.op_type == "Relu")
    first_conv = graph.nodes[0]
    editor = GraphEditor(graph)
    # the relu reads the graph input instead: the first conv and the identity become dead
    editor.replace_node(relu.name, Node(relu.name, "Relu", "", ["x_pad"], list(relu.outputs)))
    editor.insert_after(first_conv.name, Node("pad", "Pad", "", ["x", "pads"], ["x_pad"]))
    editor.set_param("pads", np.array([0, 1, 0, 0, 0, 0, 0, 0], np.int64))
    new, edits = editor.finish()
    names = {n.name for n in new.nodes}
    assert first_conv.name not in names and edits.nodes[first_conv.name] is None
    assert edits.tensors[first_conv.outputs[0]] is None
    assert first_conv.inputs[1] not in new.params  # its weight went with it
    assert edits.node_origins("pad") == () and edits.node_origins(relu.name) == (relu.name,)


def test_maps_compose_names_and_kept_channels():
    a = EditMap({"t": "t", "u": "u", "w": "w"}, {"n": "n", "m": "m"},
                kept={"t": {1: np.array([0, 2, 3, 5])}})
    b = EditMap({"t": "t2", "u": None, "w": "w"}, {"n": "n2", "m": None},
                kept={"t2": {1: np.array([1, 3])}}, changed=frozenset({"t2"}))
    both = a.then(b)
    assert both.tensors == {"t": "t2", "u": None, "w": "w"} and both.nodes == {"n": "n2", "m": None}
    np.testing.assert_array_equal(both.kept["t2"][1], [2, 5])  # indices into the first graph's t
    assert both.tensor_origin("t2") == "t" and both.changed == {"t2"}
    c = EditMap({"t2": "t3", "w": "w"}, {"n2": "n3"})
    np.testing.assert_array_equal(both.then(c).kept["t3"][1], [2, 5])  # carried by the tensor standing for it


def test_changed_values_follow_an_inexact_reroute():
    graph = onnx_in.from_model(_chain_with_identity())
    identity = next(n for n in graph.nodes if n.op_type == "Identity")
    editor = GraphEditor(graph)
    editor.remove_node(identity.name)
    editor.reroute(identity.outputs[0], identity.inputs[0])  # pretend the values differ
    _, edits = editor.finish()
    relu = next(n for n in graph.nodes if n.op_type == "Relu")
    assert relu.outputs[0] in edits.changed and "y" in edits.changed
    assert identity.inputs[0] not in edits.changed


class FoldScaleKeepingConvName:
    """A test fusion: Conv -> Mul(per-channel constant) becomes one Conv that keeps the Conv's
    node name AND its output name, so the name now holds the scaled values. Recovery that
    matched tensors by name would fit that Conv to the original's unscaled output."""

    name = "fold scale"

    def find(self, graph):
        for node in graph.nodes:
            if node.op_type == "Mul" and node.inputs[1] in graph.params:
                producer = graph.producers.get(node.inputs[0])
                if producer and producer[0].op_type == "Conv":
                    yield Match((producer[0].name, node.name))

    def check(self, graph, match):
        return None

    def rewrite(self, graph, match, editor):
        conv, mul = (graph.node_by_name[n] for n in match.nodes)
        scale = graph.params[mul.inputs[1]].reshape(-1)
        weight, bias = graph.params[conv.inputs[1]], graph.params[conv.inputs[2]]
        new = copy.copy(conv)
        new.inputs = [conv.inputs[0], editor.fresh("w_scaled"), editor.fresh("b_scaled")]
        editor.set_param(new.inputs[1], weight * scale[:, None, None, None])
        editor.set_param(new.inputs[2], bias * scale)
        editor.replace_node(conv.name, new)
        editor.remove_node(mul.name, into=conv.name)
        editor.reroute(mul.outputs[0], conv.outputs[0], same_values=True)
        editor.map_tensor(mul.outputs[0], conv.outputs[0])
        editor.map_tensor(conv.outputs[0], None)  # the unscaled values exist no more


def _redundant_chain():
    """conv_a (channel 3 duplicates channel 1) -> relu -> conv_b -> Mul(scale) -> relu -> conv_c."""
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 3, 8, 8])
    a = b.conv(x, 6)
    for init in b.inits:
        if init.name == b.nodes[-1].input[1]:
            w = np.frombuffer(init.raw_data, np.float32).reshape(6, 3, 3, 3).copy()
            w[3] = w[1]
            init.raw_data = w.tobytes()
        if init.name == b.nodes[-1].input[2]:
            v = np.frombuffer(init.raw_data, np.float32).copy()
            v[3] = v[1]
            init.raw_data = v.tobytes()
    conv_b = b.conv(b.relu(a), 5)
    scaled = b.op("Mul", [conv_b, b.const(np.linspace(0.5, 3.0, 5).astype(np.float32).reshape(1, 5, 1, 1))])
    b.output(b.rename(b.conv(b.relu(scaled), 2), "y"))
    return b.build(), a, conv_b


def test_recovery_after_fusion_fits_to_what_the_layer_now_computes():
    model, conv_a, conv_b = _redundant_chain()
    pruner = Pruner.from_model(model)
    fused = pruner.run_pass(RewritePass(FoldScaleKeepingConvName()))
    assert fused.changed == 1 and conv_b in {n.name for n in pruner.graph.nodes}
    assert pruner.edits.tensor_origin(conv_b) != conv_b  # the name stayed, its meaning did not
    result = refit_without_duplicate(pruner, conv_a, 3, refit_shifted=False)  # the fused layer alone
    assert result.kept and result.passes[0]["changed"] == 1
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(_run(pruner.graph, feeds)[0], _run(pruner.original_graph, feeds)[0],
                               rtol=1e-3, atol=1e-3)


def test_compose_runs_of_passes_into_one_map():
    graph = onnx_in.from_model(_chain_with_identity())
    new, results = run_passes(graph, [RewritePass(DropIdentity()), RewritePass(DropIdentity())])
    history = compose(graph, results)
    identity = next(n for n in graph.nodes if n.op_type == "Identity")
    assert history.tensors[identity.outputs[0]] == identity.inputs[0] and history.nodes[identity.name] is None
    assert set(history.tensors.values()) - {None} <= set(EditMap.identity(new).tensors)


def test_reroute_of_a_graph_output_is_refused():
    graph = onnx_in.from_model(_chain_with_identity())
    with pytest.raises(Exception, match="graph output"):
        GraphEditor(graph).reroute("y", "x")


def test_a_written_out_layernorm_statistic_changes_when_the_hidden_size_is_pruned():
    """ReduceMean over the pruned hidden axis keeps a valid shape but averages over fewer channels:
    its output (and the normalised values) hold other values, so recovery must treat them as changed."""
    pruner = Pruner.load(os.path.join(MODELS_DIR, "decomposed_layernorm_ts.onnx"))
    pruner.prune(PruneOptions(ratio=0.5, prune_hidden=True))
    means = [n for n in pruner.graph.nodes if n.op_type == "ReduceMean"]
    assert means and all(n.outputs[0] in pruner.edits.changed for n in means)
