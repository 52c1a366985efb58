"""head_dim pruning (``prune_head_dim``) on the exported Transformers (tests/models).

With the switch, attention prunes head_dim uniformly across heads instead of whole
heads: one group takes the same dims of every head of Q and K (the score MatMul
contracts them together), another those of V with the output projection's input
rows. The softmax scale stays the original constant, so pruning equals zeroing the
dims (the oracle), at both test lengths. Where rotary embeddings pair head_dim's
halves (LLaMA), Q/K's head_dim is a barrier with that reason; V's still prunes.
"""

import numpy as np
import onnx
import pytest

from onnxprune import Pruner, onnx_out
from onnxprune.masking import mask_group
from onnxprune.rules import Analysis
from support.exported import exported_models
from support.oracle import assert_group_oracle_at_lengths, assert_valid_at_both_lengths, prune_channels, run

MODELS = {m.name: m for m in exported_models()}
HEAD_DIM = Analysis(head_dim=True)
# head_dim groups per model (Q/K and V/O per layer; LLaMA's Q/K blocked by RoPE) and head_dim
GROUPS = {"bert_ts": 4, "bert_dynamo": 4, "vit_ts": 4, "vit_dynamo": 4, "gpt2_ts": 4, "gpt2_dynamo": 4,
          "llama_ts": 2, "llama_dynamo": 2, "swin_ts": 4, "swin_dynamo": 4}


def _head_dim_groups(pruner):
    return [g for g in pruner.prunable_groups() if g.kind == "head_dim"]


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_head_dim_prunes_like_zeroing_the_same_dims_of_every_head_at_two_lengths(name):
    model = MODELS[name]
    pruner = Pruner.from_model(model.load(), analysis=HEAD_DIM)
    groups = _head_dim_groups(pruner)
    assert [g.size for g in groups] == [8] * GROUPS[name]
    assert not any(g.kind == "heads" for g in pruner.groups)  # one unit per axis: head_dim replaces heads
    dg = pruner.depgraph
    for group in groups:
        assert not dg.inexact_nodes(group), group.describe()
        assert_group_oracle_at_lengths(dg, group, (0, 3, 4, 7), model)


def _weight_columns(pruner, group, channel):
    """Per 2-D weight of the group: the indices channel ``channel`` occupies there."""
    return {e.tensor: group.channels[channel][e].tolist() for e in group.ends
            if e.kind == "param" and pruner.graph.params[e.tensor].ndim == 2 and e in group.channels[channel]}


def test_a_head_dim_channel_is_the_same_dim_of_every_head():
    """BERT (4 heads of 8): dim 3 of the Q/K group = columns 3, 11, 19, 27 of query and key; of the
    V group = those columns of value and rows of the attention output projection."""
    pruner = Pruner.from_model(MODELS["bert_ts"].load(), analysis=HEAD_DIM)
    weights = {g.id: sorted(e.axes for e in g.ends if e.kind == "param" and pruner.graph.params[e.tensor].ndim == 2)
               for g in _head_dim_groups(pruner)}
    assert sorted(weights.values()) == [[(0,), (1,)]] * 2 + [[(1,), (1,)]] * 2  # V/O and Q/K, two layers
    every_head = [3, 11, 19, 27]
    for group in _head_dim_groups(pruner):
        assert sorted(_weight_columns(pruner, group, 3).values()) == [every_head] * 2


@pytest.mark.parametrize("name", ["llama_ts", "llama_dynamo"])
def test_rotary_embeddings_block_q_k_head_dim_with_the_reason_and_v_still_prunes(name):
    """LLaMA (RoPE's rotate_half, GQA 4 query / 2 KV heads of 8): q/k_proj blocked, naming RoPE;
    a V group channel is one dim of both KV heads in v_proj and of all 4 query heads in o_proj."""
    pruner = Pruner.from_model(MODELS[name].load(), analysis=HEAD_DIM)
    rotary = [g for g in pruner.depgraph.blocked_groups()
              if any("rotary embedding pairs head_dim halves" in r for r in g.blocked)]
    assert sorted(g.size for g in rotary) == [16, 16, 32, 32]  # q_proj (4 x 8), k_proj (2 x 8), two layers
    v = _head_dim_groups(pruner)[0]
    assert sorted(len(ix) for ix in _weight_columns(pruner, v, 5).values()) == [2, 4]
    assert sorted(sum(_weight_columns(pruner, v, 5).values(), [])) == sorted([5, 13] + [5, 13, 21, 29])


CASES = ["bert_ts", "bert_dynamo", "vit_dynamo", "gpt2_ts", "llama_dynamo"]


@pytest.mark.parametrize("name", CASES)
def test_prune_head_dim_at_half_keeps_dynamic_axes_working(name):
    model = MODELS[name]
    pruner = Pruner.from_model(model.load())  # analysed for heads; the option re-reads it for head_dim
    before = pruner.macs()
    plan = pruner.plan(ratio=0.5, prune_head_dim=True)
    assert {pruner.groups[d.group].kind for d in plan.decisions} == {"head_dim", "channels"}
    pruner.apply(plan)
    assert pruner.macs() < before
    pruned = pruner.to_model()
    assert_valid_at_both_lengths(model, pruned)


def test_cli_analyze_and_prune_with_prune_head_dim(tmp_path):
    import subprocess
    import sys
    base = [sys.executable, "-m", "onnxprune"]
    done = subprocess.run(base + ["analyze", MODELS["llama_ts"].path, "--prune-head-dim", "-q"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "head_dim 2" in _groups_line(done.stdout), done.stdout
    blocked = [line for line in done.stdout.splitlines() if line.lstrip().startswith("blocked group")]
    assert sum("rotary embedding pairs head_dim halves" in line for line in blocked) == 4, done.stdout
    done = subprocess.run(base + ["analyze", MODELS["llama_ts"].path, "-q"], capture_output=True, text=True)
    assert "heads 2" in _groups_line(done.stdout) and "rotary" not in done.stdout, done.stdout
    out = tmp_path / "out.onnx"
    done = subprocess.run(base + [MODELS["bert_ts"].path, str(out), "--prune-head-dim", "--no-prune-channels",
                                  "--runs", "0", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "removed   16 channels in 4 groups" in done.stdout, done.stdout  # half of head_dim 8, 4 groups


def _attention_with_rotary(rotary: str) -> onnx.ModelProto:
    """One attention block (2 heads of 8, batch dynamic, 6 tokens) with rotary embeddings on Q and K
    written as exporters do: rotate_half (Slice halves, Neg, Concat), interleaved (strided Slices,
    Neg, Unsqueeze, Concat, Reshape), or none."""
    from support.builder import GraphBuilder
    hidden, heads, seq = 16, 2, 6
    d = hidden // heads
    b = GraphBuilder(opset=17, seed=1, name=f"rotary_{rotary}")
    x = b.input("x", ["batch", seq, hidden])
    const = lambda *v: b.const(np.asarray(v, np.int64))  # noqa: E731
    angles = np.arange(seq)[:, None] * (1.0 / 100 ** (np.arange(d // 2) / (d // 2)))[None]
    pairs = np.concatenate([angles, angles], 1) if rotary == "rotate_half" else np.repeat(angles, 2, 1)
    cos, sin = b.const(np.cos(pairs).astype(np.float32)), b.const(np.sin(pairs).astype(np.float32))

    def rotate(t):  # [batch, heads, seq, d]
        if rotary == "rotate_half":
            first = b.op("Slice", [t, const(0), const(d // 2), const(-1)])
            second = b.op("Slice", [t, const(d // 2), const(d), const(-1)])
            turned = b.op("Concat", [b.op("Neg", [second]), first], axis=-1)
        else:
            even = b.op("Slice", [t, const(0), const(d), const(-1), const(2)])
            odd = b.op("Slice", [t, const(1), const(d), const(-1), const(2)])
            pair = b.op("Concat", [b.op("Unsqueeze", [b.op("Neg", [odd]), const(-1)]),
                                   b.op("Unsqueeze", [even, const(-1)])], axis=-1)
            turned = b.op("Reshape", [pair, const(0, heads, seq, d)])
        return b.op("Add", [b.op("Mul", [t, cos]), b.op("Mul", [turned, sin])])

    def project(t, width):
        return b.op("MatMul", [t, b.param((hidden, width), scale=0.3)])

    def split(t):
        return b.op("Transpose", [b.op("Reshape", [t, const(0, seq, heads, d)])], perm=[0, 2, 1, 3])

    q, k, v = (split(project(x, hidden)) for _ in range(3))
    if rotary != "none":
        q, k = rotate(q), rotate(k)
    scores = b.op("Div", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                          b.const(np.asarray(np.sqrt(d), np.float32))])
    context = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    merged = b.op("Reshape", [b.op("Transpose", [context], perm=[0, 2, 1, 3]), const(0, seq, hidden)])
    b.output(b.rename(project(merged, hidden), "output"))
    return b.build()


@pytest.mark.parametrize("rotary", ["none", "rotate_half", "interleaved"])
def test_rotary_embeddings_of_either_layout_block_q_k_head_dim(rotary):
    model = _attention_with_rotary(rotary)
    pruner = Pruner.from_model(model, analysis=HEAD_DIM)
    groups = _head_dim_groups(pruner)
    blocked = [g for g in pruner.depgraph.blocked_groups()
               if any("rotary embedding pairs head_dim halves" in r for r in g.blocked)]
    assert (len(groups), len(blocked)) == ((2, 0) if rotary == "none" else (1, 2))
    dg = pruner.depgraph
    for group in groups:  # V/O (and Q/K without rotary) prune like zeroing, at two batch sizes
        pruned = prune_channels(dg, group, (1, 2, 6))
        masked = onnx_out.to_model(mask_group(dg, group, (1, 2, 6)))
        for batch in (1, 3):
            feeds = {"x": np.random.default_rng(batch).standard_normal((batch, 6, 16)).astype(np.float32)}
            np.testing.assert_allclose(run(pruned, feeds)[0], run(masked, feeds)[0], rtol=1e-4, atol=1e-5)


def test_head_ratio_sets_the_head_dim_share_and_the_option_switches_the_analysis_back():
    pruner = Pruner.from_model(MODELS["bert_dynamo"].load(), analysis=HEAD_DIM)
    plan = pruner.plan(ratio=0.5, prune_head_dim=True, head_ratio=0.25)
    kinds = {d.group: pruner.groups[d.group].kind for d in plan.decisions}
    assert sorted(len(d.removed) for d in plan.decisions if kinds[d.group] == "head_dim") == [2] * 4  # 8 x 0.25
    plan = pruner.plan(ratio=0.5)  # without the option: whole heads again
    assert {pruner.groups[d.group].kind for d in plan.decisions} == {"heads", "channels"}
    assert not pruner.analysis.head_dim


def _groups_line(stdout: str) -> str:
    """The summary's groups line (notes on what was rewritten before analysis may come first)."""
    return next(line for line in stdout.splitlines() if line.startswith("groups"))
