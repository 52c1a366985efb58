#!/usr/bin/env python
"""Export tiny random-init Transformer / RNN / graph-network models into ``tests/models/``.

These are the models the Transformer, RNN and GCN tests prune (issue 9), so
that the tests need no torch: real exporter output, with dynamic batch and
sequence (or node-count) axes, from both torch exporters where they work:

* ``<name>_ts.onnx``     TorchScript exporter (``dynamo=False``), opset 17, ``dynamic_axes``
* ``<name>_dynamo.onnx`` torch.export-based exporter (``dynamo=True``), opset 18, ``dynamic_shapes``

Hugging Face architectures are built from tiny configs offline (no hub
download), with eager attention; the RNN and GCN models are small torch
modules written here. Every export is checked against torch in onnxruntime at
two sequence lengths before it is written. Weights come from a fixed seed, so
a rerun writes the same models.

    python -m venv .venv-export && . .venv-export/bin/activate
    pip install torch==2.13.0 transformers onnxscript onnx onnxruntime
    pip install --no-deps torchvision==0.28.0   # tv_vit, tv_swin only
    python scripts/export_transformers.py [--only NAME ...] [--out-dir tests/models]
    python scripts/export_transformers.py --bench --exporters ts   # larger configs into models/extra/architectures

A model that an exporter cannot handle is skipped with a one-line message
(the README in the output folder records which).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import traceback
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

SEED = 0
TS_OPSET = 17
DYNAMO_OPSET = 18
MAX_KB = 300
VOCAB = 100
MAX_POS = 64
CLASSES = 3


@dataclass
class Spec:
    """One model to export: how to build it and what its inputs look like."""

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int, int], tuple[torch.Tensor, ...]]  # (batch, length) -> example inputs
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic: dict[str, dict[int, str]]  # input/output name -> {axis: symbolic name}
    lengths: tuple[int, int] = (7, 12)  # sequence lengths (node counts for graphs) checked
    batches: tuple[int, int] = (2, 3)
    description: str = ""
    max_len: int = MAX_POS - 1  # largest sequence length (node count) the dynamo export's dims allow
    max_kb: int | None = MAX_KB  # committed test models stay small; bench-size models have no limit
    # torch 2.13's dynamo exporter records aten.lstm/gru outputs with the example's sequence length and its
    # optimizer then folds that length into a Reshape target: for such models export unoptimized, drop the
    # recorded value_info, declare the spec's symbolic dims on the outputs, then run onnxscript's optimizer
    repair_dynamo_dims: bool = False


def _seeded(build):
    def wrapped():
        torch.manual_seed(SEED)
        model = build()
        _spread_norm_params(model)
        return model.eval()
    return wrapped


def _spread_norm_params(model: nn.Module) -> None:
    """Random-init norms have weight 1 / bias 0 everywhere: make channels distinguishable."""
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name.lower() or "ln" in name.lower()):
                if name.endswith("weight"):
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))


class LastHidden(nn.Module):
    """Wraps a Hugging Face model so the export has plain tensor outputs."""

    def __init__(self, model: nn.Module, field: str, names: tuple[str, ...]):
        super().__init__()
        self.model, self.field, self.names = model, field, names

    def forward(self, *args):
        return getattr(self.model(**dict(zip(self.names, args))), self.field)


# ------------------------------------------------------------------ HF models
def _hf(cls_name: str, config_name: str, field: str, names=("input_ids", "attention_mask"), **config):
    def build():
        import transformers
        cfg = getattr(transformers, config_name)(**config)
        cfg._attn_implementation = "eager"
        return LastHidden(getattr(transformers, cls_name)(cfg), field, names)
    return build


def _ids_mask(batch, length):
    ids = torch.randint(0, VOCAB, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[0, length - 2:] = 0  # some padding, so the mask matters
    return ids, mask


BERT = Spec(
    "bert", _seeded(_hf("BertForSequenceClassification", "BertConfig", "logits", vocab_size=VOCAB, hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        max_position_embeddings=MAX_POS, num_labels=CLASSES, use_cache=False)),
    _ids_mask, ("input_ids", "attention_mask"), ("logits",),
    {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}},
    description="BERT classifier (transformers BertForSequenceClassification): 2 layers, hidden 32, 4 heads, "
                "MLP 128, padding mask, pooler + 3-class head")

# Realistic proportions, tiny sizes: as in ViT-B/16 (3x16x16 = 768 = hidden), a patch holds about as many
# values as the hidden size (3x4x4 = 48 for hidden 32) and the MLP is 4x hidden, so the patch-embedding conv
# is a small share of the MACs (about 5%, 0.7% in ViT-B/16) and not a third of them.
VIT = Spec(
    "vit", _seeded(_hf("ViTForImageClassification", "ViTConfig", "logits", ("pixel_values",), image_size=16,
                       patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, num_labels=CLASSES)),
    lambda b, n: (torch.randn(b, 3, 16, 16),), ("pixel_values",), ("logits",),
    {"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
    description="ViT classifier (transformers ViTForImageClassification): 16x16 image, patch 4 (16 tokens + CLS), "
                "hidden 32, 4 heads, MLP 128, 3-class head on CLS")

GPT2 = Spec(
    "gpt2", _seeded(_hf("GPT2LMHeadModel", "GPT2Config", "logits", vocab_size=VOCAB, n_embd=32, n_layer=2,
                        n_head=4, n_positions=MAX_POS, use_cache=False)),
    _ids_mask, ("input_ids", "attention_mask"), ("logits",),
    {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
    description="GPT-2 decoder (transformers GPT2LMHeadModel): causal mask, Conv1D projections, tied LM head")

LLAMA = Spec(
    "llama", _seeded(_hf("LlamaForCausalLM", "LlamaConfig", "logits", vocab_size=VOCAB, hidden_size=32,
                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=MAX_POS, use_cache=False,
                         tie_word_embeddings=False)),
    _ids_mask, ("input_ids", "attention_mask"), ("logits",),
    {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
    description="LLaMA decoder (transformers LlamaForCausalLM): RMSNorm, RoPE, GQA 4 query / 2 KV heads, SwiGLU")

SWIN = Spec(
    "swin", _seeded(_hf("SwinModel", "SwinConfig", "last_hidden_state", ("pixel_values",), image_size=32, patch_size=4,
                        num_channels=3, embed_dim=16, depths=[2], num_heads=[2], window_size=4,
                        mlp_ratio=2.0, add_pooling_layer=False)),
    lambda b, n: (torch.randn(b, 3, 32, 32),), ("pixel_values",), ("last_hidden_state",),
    {"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"}},
    description="Swin stage (transformers SwinModel): 8x8 patches, window 4 (partition/reverse), shifted "
                "window, relative position bias, hidden 16, 2 heads")


# ---------------------------------------------------------------- RNN models
class BiLSTMClassifier(nn.Module):
    """Embedding -> bidirectional LSTM -> per-token and sentence logits (both use Y and Y_h)."""

    def __init__(self, hidden=12, embed=10, classes=3, vocab=VOCAB):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, bidirectional=True)
        self.tagger = nn.Linear(2 * hidden, classes)
        self.classifier = nn.Linear(2 * hidden, classes)

    def forward(self, ids):  # ids: [seq, batch]
        y, (h, _) = self.lstm(self.embed(ids))
        sentence = torch.cat([h[0], h[1]], dim=-1)
        return self.tagger(y), self.classifier(sentence)


class GRUTagger(nn.Module):
    """Two stacked GRU layers (unidirectional) -> linear head; a feature input, batch first."""

    def __init__(self, features=6, hidden=10, classes=4, proj=8):
        super().__init__()
        self.proj = nn.Linear(features, proj)
        self.gru = nn.GRU(proj, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):  # x: [batch, seq, features]
        y, _ = self.gru(torch.relu(self.proj(x)))
        return self.head(y)


LSTM = Spec("bilstm", _seeded(BiLSTMClassifier), lambda b, n: (torch.randint(0, VOCAB, (n, b)),),
            ("ids",), ("tags", "sentence"),
            {"ids": {0: "seq", 1: "batch"}, "tags": {0: "seq", 1: "batch"}, "sentence": {0: "batch"}},
            description="bidirectional LSTM text classifier: embedding 10, hidden 12, token and sentence heads",
            repair_dynamo_dims=True)
GRU = Spec("gru", _seeded(GRUTagger), lambda b, n: (torch.randn(b, n, 6),), ("x",), ("logits",),
           {"x": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
           description="2-layer GRU tagger (batch first): Linear 6->8, hidden 10, Linear 10->4",
           repair_dynamo_dims=True)


# ------------------------------------------------------------- graph networks
class GCN(nn.Module):
    """GCN layer A @ (X @ W) + b, then a message-passing layer (Gather on source nodes,
    ScatterElements-add onto destinations, an index_put-accumulated degree), mean readout."""

    def __init__(self, features=8, hidden=16, out=12, classes=3):
        super().__init__()
        self.gcn = nn.Linear(features, hidden)
        self.message = nn.Linear(hidden, out)
        self.update = nn.Linear(hidden, out)
        self.readout = nn.Linear(out, classes)

    def forward(self, x, adj, edge_index):  # x [N, F], adj [N, N], edge_index [2, E]
        h = torch.relu(adj @ self.gcn(x))
        src, dst = edge_index[0], edge_index[1]
        msg = self.message(h[src])  # Gather on the node axis
        agg = torch.zeros(h.shape[0], msg.shape[1]).scatter_add(0, dst.unsqueeze(1).expand_as(msg), msg)
        h2 = torch.relu(agg + self.update(h))
        return self.readout(h2.mean(dim=0, keepdim=True)), h2


def _graph_inputs_for(features):
    def graph_inputs(batch, nodes):
        gen = torch.Generator().manual_seed(nodes)
        x = torch.randn(nodes, features, generator=gen)
        a = (torch.rand(nodes, nodes, generator=gen) < 0.3).float() + torch.eye(nodes)
        adj = a / a.sum(dim=1, keepdim=True)
        edges = 3 * nodes
        edge_index = torch.randint(0, nodes, (2, edges), generator=gen)
        return x, adj, edge_index
    return graph_inputs


_graph_inputs = _graph_inputs_for(8)


GCN_SPEC = Spec("gcn", _seeded(GCN), _graph_inputs, ("x", "adj", "edge_index"), ("logits", "node_features"),
                {"x": {0: "nodes"}, "adj": {0: "nodes", 1: "nodes"}, "edge_index": {1: "edges"},
                 "node_features": {0: "nodes"}},
                description="GCN: A @ X @ W layer, message passing (Gather src, ScatterElements add to dst), "
                            "mean readout; node and edge counts dynamic")


# --------------------------------------------------------- decomposed norms
class DecomposedLayerNorm(nn.Module):
    """A LayerNorm written out (mean, variance, sqrt, divide) as older exporters emit it."""

    def __init__(self, width=16, eps=1e-5):
        super().__init__()
        self.fc1 = nn.Linear(10, width)
        self.weight = nn.Parameter(1 + 0.2 * torch.randn(width))
        self.bias = nn.Parameter(0.1 * torch.randn(width))
        self.fc2 = nn.Linear(width, 5)
        self.eps = eps

    def forward(self, x):  # x [batch, seq, 10]
        h = self.fc1(x)
        mean = h.mean(-1, keepdim=True)
        var = (h - mean).pow(2).mean(-1, keepdim=True)
        h = (h - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
        return self.fc2(torch.relu(h))


DECOMPOSED_LN = Spec("decomposed_layernorm", _seeded(DecomposedLayerNorm), lambda b, n: (torch.randn(b, n, 10),),
                     ("x",), ("y",), {"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}},
                     description="Linear -> LayerNorm decomposed into ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add -> Linear")

# ------------------------------------------ torch's own attention (issue 17)
def _torchvision_vit():
    """torchvision.models.VisionTransformer at a tiny size (vit_b_16's code: nn.MultiheadAttention,
    whose heads are folded into the batch axis by a Reshape). torchvision's C++ ops need not load."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from export_models import import_torchvision_models
    tvm = import_torchvision_models()
    if tvm is None:
        raise RuntimeError("torchvision is not usable (pip install --no-deps torchvision==0.28.0)")
    model = tvm.VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=4, hidden_dim=32,
                                  mlp_dim=128, num_classes=CLASSES)
    with torch.no_grad():  # torchvision zero-inits the head (and near-zero MLP biases): outputs would all be 0
        model.heads.head.weight.normal_(0, 0.2)
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.abs().max() < 1e-3:
                p.normal_(0, 0.05)
    return model


def _torchvision_swin():
    """torchvision.models.SwinTransformer (swin_t's code) at a tiny size: window partition/reverse, the shifted
    window's roll and mask, q/k/v from one linear split to (3, heads, head_dim), patch merging; the TorchScript
    export reads every view's sizes from Shape at run time."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from export_models import import_torchvision_models
    if import_torchvision_models() is None:
        raise RuntimeError("torchvision is not usable (pip install --no-deps torchvision==0.28.0)")
    from torchvision.models.swin_transformer import SwinTransformer
    model = SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[2, 1], num_heads=[2, 4], window_size=[4, 4],
                            mlp_ratio=2.0, stochastic_depth_prob=0.0, num_classes=CLASSES)
    with torch.no_grad():  # torchvision zero-inits the biases: make channels distinguishable
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.abs().max() < 1e-3:
                p.normal_(0, 0.05)
    return model


class CharTransformer(nn.Module):
    """A character-level language model as tutorials write it: token + learned position embeddings,
    nn.TransformerEncoder (pre-norm, causal mask, GELU), a LayerNorm and a linear head."""

    def __init__(self, vocab=VOCAB, width=32, heads=4, layers=2, max_len=MAX_POS):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(max_len, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids):  # ids [batch, seq]
        n = ids.shape[1]
        h = self.tok(ids) + self.pos(torch.arange(n, device=ids.device))
        steps = torch.arange(n, device=ids.device)
        mask = steps[None, :] > steps[:, None]  # True: may not attend (a later position)
        return self.head(self.ln(self.blocks(h, mask=mask, is_causal=True)))


TV_VIT = Spec("tv_vit", _seeded(_torchvision_vit), lambda b, n: (torch.randn(b, 3, 16, 16),), ("x",), ("logits",),
              {"x": {0: "batch"}, "logits": {0: "batch"}},
              description="ViT classifier (torchvision.models.VisionTransformer, vit_b_16's code): 16x16 image, "
                          "patch 4, hidden 32, 4 heads (nn.MultiheadAttention: heads folded into the batch axis), "
                          "MLP 128, 3 classes")
TV_SWIN = Spec("tv_swin", _seeded(_torchvision_swin), lambda b, n: (torch.randn(b, 3, 16, 16),), ("x",), ("logits",),
               {"x": {0: "batch"}, "logits": {0: "batch"}},
               description="Swin classifier (torchvision.models.SwinTransformer, swin_t's code): 16x16 image, patch 2, "
                           "embed 8, stages of 2 and 1 blocks (2 and 4 heads), window 4 (shifted in stage 1), patch "
                           "merging, MLP ratio 2, 3 classes")
# a fixed context (block size 16), as character models are exported: the TorchScript exporter records
# nn.MultiheadAttention's sequence length as a constant when a mask is given
CHAR = Spec("char_transformer", _seeded(CharTransformer), lambda b, n: (torch.randint(0, VOCAB, (b, 16)),), ("ids",),
            ("logits",), {"ids": {0: "batch"}, "logits": {0: "batch"}},
            description=f"character-level LM: vocabulary {VOCAB}, context 16, nn.TransformerEncoder (2 pre-norm "
                        "layers, width 32, 4 heads, MLP 128, causal mask), LayerNorm, linear head")

SPECS = (BERT, VIT, GPT2, LLAMA, SWIN, LSTM, GRU, GCN_SPEC, DECOMPOSED_LN, TV_VIT, CHAR, TV_SWIN)


# ------------------------------------------------------- bench-size models
def bench_specs() -> tuple[Spec, ...]:
    """The same architectures at sizes where onnxruntime latency means something (scripts/bench_transformers.py;
    written to models/extra, never committed): hidden 256 / 4 layers for text (head_dim 64, sequences up to 255),
    ViT-style proportions for images, RNN hidden 256, GCN width 256."""
    pos, big = 256, dict(max_len=255, max_kb=None)
    text = dict(vocab_size=1000, use_cache=False)
    return (
        replace(BERT, build=_seeded(_hf("BertForSequenceClassification", "BertConfig", "logits", hidden_size=256,
                                        num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                                        max_position_embeddings=pos, num_labels=CLASSES, **text)),
                description="BERT classifier: 4 layers, hidden 256, 4 heads, MLP 1024", **big),
        replace(VIT, build=_seeded(_hf("ViTForImageClassification", "ViTConfig", "logits", ("pixel_values",),
                                       image_size=64, patch_size=8, num_channels=3, hidden_size=192,
                                       num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
                                       num_labels=CLASSES)),
                inputs=lambda b, n: (torch.randn(b, 3, 64, 64),),
                description="ViT classifier: 64x64 image, patch 8 (64 tokens + CLS), hidden 192, 3 heads, MLP 768",
                **big),
        replace(GPT2, build=_seeded(_hf("GPT2LMHeadModel", "GPT2Config", "logits", n_embd=256, n_layer=4, n_head=4,
                                        n_positions=pos, **text)),
                description="GPT-2 decoder: 4 layers, hidden 256, 4 heads, vocabulary 1000", **big),
        replace(LLAMA, build=_seeded(_hf("LlamaForCausalLM", "LlamaConfig", "logits", hidden_size=256,
                                         intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                                         num_key_value_heads=2, max_position_embeddings=pos,
                                         tie_word_embeddings=False, **text)),
                description="LLaMA decoder: 4 layers, hidden 256, 4 query / 2 KV heads, SwiGLU 688", **big),
        replace(SWIN, build=_seeded(_hf("SwinModel", "SwinConfig", "last_hidden_state", ("pixel_values",),
                                        image_size=64, patch_size=4, num_channels=3, embed_dim=128, depths=[2],
                                        num_heads=[4], window_size=8, mlp_ratio=4.0, add_pooling_layer=False)),
                inputs=lambda b, n: (torch.randn(b, 3, 64, 64),),
                description="Swin stage: 16x16 patches, window 8, hidden 128, 4 heads, MLP 512", **big),
        replace(LSTM, build=_seeded(partial(BiLSTMClassifier, hidden=256, embed=128)),
                description="bidirectional LSTM: embedding 128, hidden 256", **big),
        replace(GRU, build=_seeded(partial(GRUTagger, hidden=256, proj=128)),
                description="2-layer GRU: Linear 6->128, hidden 256", **big),
        replace(GCN_SPEC, build=_seeded(partial(GCN, features=64, hidden=256, out=128)),
                inputs=_graph_inputs_for(64), description="GCN: 64 features, width 256, message 128", **big),
    )


# ------------------------------------------------------------------- export
def _export(spec: Spec, model: nn.Module, path: str, dynamo: bool) -> None:
    torch.manual_seed(SEED + 2)
    args = spec.inputs(spec.batches[0], spec.lengths[0])
    common = dict(input_names=list(spec.input_names), output_names=list(spec.output_names))
    sink = io.StringIO()
    with warnings.catch_warnings(), redirect_stdout(sink), redirect_stderr(sink):
        warnings.simplefilter("ignore")
        if not dynamo:
            torch.onnx.export(model, args, path, dynamo=False, opset_version=TS_OPSET, do_constant_folding=True,
                              dynamic_axes=spec.dynamic, **common)
            return
        dims = {}
        shapes = []
        for name in spec.input_names:
            axes = spec.dynamic.get(name, {})
            shapes.append({a: dims.setdefault(sym, torch.export.Dim(sym, min=2, max=spec.max_len))
                           for a, sym in axes.items()} or None)
        dynamic_shapes = {"args": tuple(shapes)} if isinstance(model, LastHidden) else tuple(shapes)
        program = torch.onnx.export(model, args, dynamo=True, opset_version=DYNAMO_OPSET, external_data=False,
                                    dynamic_shapes=dynamic_shapes, optimize=not spec.repair_dynamo_dims, **common)
        if spec.repair_dynamo_dims:
            onnx.save(_repaired_dims(spec, program.model_proto), path)
        else:
            program.save(path)
        _strip_debug_metadata(path)


def _repaired_dims(spec: Spec, model: onnx.ModelProto) -> onnx.ModelProto:
    """The unoptimized export with its recorded (partly wrong) shapes dropped, declared outputs symbolic, re-inferred
    and optimized."""
    import onnxscript.optimizer
    del model.graph.value_info[:]
    for value in model.graph.output:
        for axis, sym in spec.dynamic.get(value.name, {}).items():
            value.type.tensor_type.shape.dim[axis].dim_param = sym
    # data propagation recovers the static sizes (hidden_size) that gate the weight slicing, so it folds
    return onnxscript.optimizer.optimize(onnx.shape_inference.infer_shapes(model, data_prop=True))


def _strip_debug_metadata(path: str) -> None:
    """The dynamo exporter records a stack trace per node and value: drop them (3x smaller files)."""
    model = onnx.load(path)
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        del value.metadata_props[:]
    for tensor in model.graph.initializer:
        del tensor.metadata_props[:]
    onnx.save(model, path)


def _check(spec: Spec, model: nn.Module, path: str) -> None:
    """onnxruntime matches torch at two batch sizes and sequence lengths."""
    model_proto = onnx.load(path)
    onnx.checker.check_model(model_proto, full_check=True)
    ends = list(model_proto.graph.input) + list(model_proto.graph.output)
    declared = {v.name: v.type.tensor_type.shape.dim for v in ends}
    for name, axes in spec.dynamic.items():
        for axis in axes:
            if declared[name][axis].HasField("dim_value"):
                fixed = declared[name][axis].dim_value
                raise RuntimeError(f"the exporter fixed dynamic axis {axis} of {name} to {fixed}")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch, length in zip(spec.batches, spec.lengths):
        torch.manual_seed(SEED + 3 + length)
        args = spec.inputs(batch, length)
        with torch.no_grad():
            expected = model(*args)
        expected = expected if isinstance(expected, tuple) else (expected,)
        feeds = {n: a.numpy() for n, a in zip(spec.input_names, args)}
        got = session.run(None, feeds)
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e.numpy(), rtol=1e-3, atol=1e-4)


def export_one(spec: Spec, out_dir: str, dynamo: bool) -> dict:
    suffix = "dynamo" if dynamo else "ts"
    path = os.path.join(out_dir, f"{spec.name}_{suffix}.onnx")
    model = spec.build()
    tmp = path + ".tmp"
    try:
        _export(spec, model, tmp, dynamo)
        _check(spec, model, tmp)
        size_kb = os.path.getsize(tmp) / 1024
        if spec.max_kb is not None and size_kb > spec.max_kb:
            raise RuntimeError(f"{size_kb:.0f} KB > {spec.max_kb} KB")
        os.replace(tmp, path)
    except Exception as exc:  # report and go on: one exporter failing must not stop the others
        if os.path.exists(tmp):
            os.remove(tmp)
        if os.path.exists(path):
            os.remove(path)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        print(f"skip {spec.name} ({suffix}): {type(exc).__name__}: {first}", file=sys.stderr)
        if os.environ.get("EXPORT_DEBUG"):
            traceback.print_exc()
        return {"name": spec.name, "exporter": suffix, "file": None, "error": f"{type(exc).__name__}: {first}"}
    m = onnx.load(path)
    ops = sorted({(n.domain + "::" if n.domain else "") + n.op_type for n in m.graph.node})
    opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    print(f"wrote {path} ({size_kb:.0f} KB, {len(m.graph.node)} nodes, opset {opset.get('ai.onnx')})",
          file=sys.stderr)
    return {"name": spec.name, "exporter": suffix, "file": os.path.basename(path), "kb": round(size_kb, 1),
            "nodes": len(m.graph.node), "opset": opset.get("ai.onnx"), "ops": ops,
            "inputs": list(spec.input_names), "description": spec.description}


BENCH_DIR = os.path.join(os.path.dirname(__file__), "..", "models", "extra", "architectures")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", help="default: tests/models, or models/extra/architectures with --bench")
    parser.add_argument("--only", nargs="*", help="model names to export (default: all)")
    parser.add_argument("--bench", action="store_true", help="bench-size configs (scripts/bench_transformers.py)")
    parser.add_argument("--exporters", default="ts,dynamo", help="ts, dynamo or both (default: both)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or (BENCH_DIR if args.bench else os.path.join(os.path.dirname(__file__), "..", "tests",
                                                                         "models"))
    os.makedirs(out_dir, exist_ok=True)
    exporters = [e.strip() for e in args.exporters.split(",")]
    results = []
    for spec in bench_specs() if args.bench else SPECS:
        if args.only and spec.name not in args.only:
            continue
        for dynamo in (False, True):
            if ("dynamo" if dynamo else "ts") in exporters:
                results.append(export_one(spec, out_dir, dynamo))
    if not args.only and not args.bench and exporters == ["ts", "dynamo"]:
        with open(os.path.join(out_dir, "README.md"), "w") as f:
            f.write(render_readme(results))
    return 1 if any(r["file"] is None for r in results) and args.bench else 0


def render_readme(results: list[dict]) -> str:
    """tests/models/README.md: what each model is, how it was exported, and what was skipped."""
    lines = [
        "# Exported test models (issue 9)",
        "",
        "Tiny random-init models written by `scripts/export_transformers.py` (do not edit by hand;",
        "rerun the script). The tests load them without torch through `tests/support/exported.py`,",
        "which also makes their inputs at two sizes of the dynamic axes.",
        "",
        "    python -m venv .venv-export && . .venv-export/bin/activate",
        "    pip install torch==2.13.0 transformers onnxscript onnx onnxruntime",
        "    pip install --no-deps torchvision==0.28.0   # tv_vit, tv_swin (its C++ ops need not load)",
        "    python scripts/export_transformers.py",
        "",
        f"`_ts`: TorchScript exporter (`dynamo=False`, opset {TS_OPSET}, `dynamic_axes`); `_dynamo`:",
        f"`torch.onnx.export(dynamo=True)` (opset {DYNAMO_OPSET}, `dynamic_shapes`; per-node stack-trace",
        "metadata stripped). Every export is compared with torch in onnxruntime at two batch sizes and",
        "lengths before it is written. Symbolic dims: `batch`, `seq`, `nodes`, `edges`. Text models take",
        f"`input_ids` (vocabulary {VOCAB}) and `attention_mask`.",
        "",
        "`realworld/`: zoo-style (IR 3, opsets 7/8, weights built from constants), GCN-as-MatMuls and dynamic-dim",
        "models written without torch by `scripts/build_realworld_models.py` (see its README).",
        "",
    ]
    repaired = [f"{spec.name}_dynamo" for spec in SPECS if spec.repair_dynamo_dims]
    if repaired:
        lines += [
            f"{', '.join(repaired)}: torch 2.13's dynamo exporter records the RNN outputs with the example's",
            "sequence length and its optimizer folds that into a Reshape target (the model then fails at other",
            "lengths); these are exported unoptimized, their recorded shapes dropped, the outputs' dynamic axes",
            "declared, shapes re-inferred and onnxscript's optimizer run. They keep ONNX LSTM / GRU ops.",
            "",
        ]
    lines += [
        "| file | KB | nodes | opset | inputs | model |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["file"]:
            lines.append(f"| {r['file']} | {r['kb']:.0f} | {r['nodes']} | {r['opset']} | "
                         f"{', '.join(r['inputs'])} | {r['description']} |")
    skipped = [r for r in results if not r["file"]]
    if skipped:
        lines += ["", "Not exported (the exporter failed or produced a model we reject):", ""]
        lines += [f"- {r['name']} ({r['exporter']}): {r['error']}" for r in skipped]
    lines += ["", "Operators per model:", ""]
    lines += [f"- {r['file']}: {' '.join(r['ops'])}" for r in results if r["file"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
