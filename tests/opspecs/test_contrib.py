"""onnxruntime contrib ops (opspecs/contrib.py): rules where the channel mapping is plain, barriers with reasons.

Each test graph is x -> MatMul+Add (C channels, a root) -> contrib op -> MatMul -> output,
run by onnxruntime's CPU kernels for the com.microsoft domain.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import Pruner, onnx_in
from onnxprune.rules import IN, OUT, NodeView
from onnxprune.opspecs import default_registry
from support.oracle import assert_all_groups_oracle, depgraph, random_feeds, run

B, S, FEAT, C = 2, 5, 6, 8
RNG = np.random.default_rng(0)
OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]


def _arr(*shape, scale=0.5):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _model(make_op, inputs=None, c_out=C, extra_inits=()):
    """Two projections around the op under test: 'h' = x @ W1 + b1 [B, S, C]; output = op(...) @ W2."""
    inits = {"W1": _arr(FEAT, C), "b1": _arr(C, scale=0.1), "W2": _arr(c_out, 4), "W0": _arr(FEAT, C)}
    inits.update(dict(extra_inits))
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["m"], name="proj"),
             helper.make_node("Add", ["m", "b1"], ["h"], name="proj_bias"),
             helper.make_node("MatMul", ["x", "W0"], ["h2"], name="proj2")]
    op_nodes, result = make_op()
    nodes += op_nodes
    nodes.append(helper.make_node("MatMul", [result, "W2"], ["output"], name="head"))
    graph = helper.make_graph(nodes, "contrib", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, FEAT])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [B, S, 4])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _ms(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name=op, domain="com.microsoft", **attrs)


EXACT = {
    "FastGelu": lambda: ([_ms("FastGelu", ["m", "b1"])], "y"),
    "BiasGelu": lambda: ([_ms("BiasGelu", ["m", "b1"])], "y"),
    "Gelu": lambda: ([_ms("Gelu", ["h"])], "y"),
    "QuickGelu": lambda: ([_ms("QuickGelu", ["h"], alpha=1.702)], "y"),
}


@pytest.mark.parametrize("op", sorted(EXACT))
def test_biased_and_plain_activations_prune_exactly(op):
    model = _model(EXACT[op])
    dg = assert_all_groups_oracle(model, min_groups=1)
    group = dg.group_of("proj")
    assert group.prunable and group.size == C and not dg.inexact_nodes(group)
    assert any(e.node == op for e in group.ends)


@pytest.mark.parametrize("op", ["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"])
def test_skip_layer_norms_prune_hidden_inexactly(op):
    params = ["gamma", "beta", "bias"] if op == "SkipLayerNormalization" else ["gamma", "bias"]
    inits = {p: (1 + _arr(C, scale=0.2)) if p == "gamma" else _arr(C, scale=0.1) for p in params}
    model = _model(lambda: ([_ms(op, ["h", "h2"] + params, epsilon=1e-5)], "y"), extra_inits=inits.items())
    dg = assert_all_groups_oracle(model, min_groups=1)  # inexact groups: valid, same shapes
    group = dg.group_of("proj")
    assert group is dg.group_of("proj2") and group.prunable
    assert dg.inexact_nodes(group) == [op]
    assert {e.tensor for e in group.ends if e.kind == "param"} >= set(params)
    # statistics span the hidden axis: a hidden-size group, pruned only with prune_hidden
    assert group.kind == "hidden"
    pruner = Pruner.from_model(model)
    assert not pruner.plan(ratio=0.5).decisions
    assert [len(d.removed) for d in pruner.plan(ratio=0.5, prune_hidden=True).decisions] == [C // 2]


def test_fused_attention_prunes_its_input_width_and_blocks_heads_with_a_reason():
    hidden = 8
    def make():
        return [_ms("Attention", ["h", "Wqkv", "bqkv"], num_heads=2)], "y"
    model = _model(make, c_out=hidden, extra_inits=[("Wqkv", _arr(C, 3 * hidden)), ("bqkv", _arr(3 * hidden))])
    dg = assert_all_groups_oracle(model, min_groups=1)
    group = dg.group_of("proj")  # input width: rows of the packed weight
    assert group.prunable and any(e.tensor == "Wqkv" and e.axes == (0,) for e in group.ends)
    answer = _rule_answer(model, "Attention", OUT(0))
    assert "packs Q, K and V of 2 heads" in answer.reason and "whole heads" in answer.reason


def _rule_answer(model, node_name, port, axes=(2,)):
    graph = onnx_in.from_model(model)
    node = graph.node_by_name[node_name]
    return default_registry().lookup(node.domain, node.op_type, 1).couple(NodeView(node, graph), port, axes)


@pytest.mark.parametrize("op,reason", [("MultiHeadAttention", "num_heads=2"), ("RotaryEmbedding", "pairs dimension")])
def test_head_ops_are_barriers_with_reasons(op, reason):
    if op == "MultiHeadAttention":
        make = lambda: ([_ms(op, ["h", "h2", "h2"], num_heads=2)], "y")  # noqa: E731
        extra = []
    else:
        extra = [("pos", np.arange(S, dtype=np.int64)[None].repeat(B, 0)), ("cos", _arr(16, 2)), ("sin", _arr(16, 2))]
        make = lambda: ([_ms(op, ["h", "pos", "cos", "sin"], num_heads=2)], "y")  # noqa: E731
    model = _model(make, extra_inits=extra)
    assert [y.shape for y in run(model, random_feeds(model))] == [(B, S, 4)]  # onnxruntime runs the op
    assert reason in _rule_answer(model, op, IN(0)).reason
    dg = depgraph(model)
    assert any(reason in r for r in dg.group_of("proj").blocked)


def test_grouped_query_attention_is_a_barrier_for_query_and_kv_heads():
    """GroupQueryAttention(query [B,S,2x8], key/value [B,S,1x8]): both projections stop at it, with the reason."""
    heads, kv_heads, head_size = 2, 1, 8  # onnxruntime's CPU kernel wants head_size % 8 == 0
    inits = {"Wq": _arr(FEAT, heads * head_size), "Wk": _arr(FEAT, kv_heads * head_size),
             "Wv": _arr(FEAT, kv_heads * head_size), "W2": _arr(heads * head_size, 4),
             "seqlens_k": np.full(B, S - 1, np.int32), "total_len": np.array(S, np.int32)}
    nodes = [helper.make_node("MatMul", ["x", f"W{p}"], [p], name=f"proj_{p}") for p in "qkv"]
    nodes += [_ms("GroupQueryAttention", ["q", "k", "v", "", "", "seqlens_k", "total_len"], ["y", "present_k",
                                                                                             "present_v"],
                  num_heads=heads, kv_num_heads=kv_heads),
              helper.make_node("MatMul", ["y", "W2"], ["output"], name="head")]
    graph = helper.make_graph(nodes, "gqa", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, FEAT])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [B, S, 4])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=OPSETS)
    model.ir_version = 8
    assert [y.shape for y in run(model, random_feeds(model))] == [(B, S, 4)]
    dg = depgraph(model)
    for proj in ("proj_q", "proj_k", "proj_v"):
        group = dg.group_of(proj)
        assert not group.prunable
        assert any("GroupQueryAttention" in r and "num_heads=2" in r for r in group.blocked), group.blocked


def test_embed_layer_norm_prunes_its_tables_and_norm_with_the_hidden_size():
    """EmbedLayerNormalization (BERT's fused embeddings) -> MatMul: word/position/segment tables, gamma,
    beta and the output's hidden axis are one hidden-size group (inexact); onnxruntime runs the result."""
    vocab, positions, hidden = 20, 16, 8
    inits = {"words": _arr(vocab, hidden), "pos": _arr(positions, hidden), "segs": _arr(2, hidden),
             "gamma": 1 + _arr(hidden, scale=0.1), "beta": _arr(hidden, scale=0.1), "W2": _arr(hidden, 4)}
    nodes = [_ms("EmbedLayerNormalization", ["ids", "seg_ids", "words", "pos", "segs", "gamma", "beta"],
                 ["e", "mask_index"], epsilon=1e-5),
             helper.make_node("MatMul", ["e", "W2"], ["output"], name="head")]
    ints = [helper.make_tensor_value_info(n, TensorProto.INT32, [B, S]) for n in ("ids", "seg_ids")]
    graph = helper.make_graph(nodes, "embed", ints, [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                                                                    [B, S, 4])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=OPSETS)
    model.ir_version = 8
    feeds = {"ids": RNG.integers(0, vocab, (B, S)).astype(np.int32),
             "seg_ids": RNG.integers(0, 2, (B, S)).astype(np.int32)}
    pruner = Pruner.from_model(model)
    group = pruner.group_of("EmbedLayerNormalization", port=OUT(0))
    assert group.prunable and group.kind == "hidden"
    assert pruner.depgraph.inexact_nodes(group) == ["EmbedLayerNormalization"]
    assert {e.tensor for e in group.ends if e.kind == "param"} == {"words", "pos", "segs", "gamma", "beta", "W2"}
    assert not pruner.plan(ratio=0.5).decisions
    pruner.prune(ratio=0.5, prune_hidden=True)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    assert run(pruned, feeds)[0].shape == run(model, feeds)[0].shape == (B, S, 4)
    assert {t.name: tuple(t.dims) for t in pruned.graph.initializer}["words"] == (vocab, hidden // 2)
