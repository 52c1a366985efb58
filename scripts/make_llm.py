"""A LLaMA-shaped decoder of any size from 10M to about 1B parameters, random weights as external data.

    python scripts/make_llm.py --params 1B out/llm1b.onnx            # fp32, ~4 GB of data
    python scripts/make_llm.py --params 100M --dtype fp16 out/llm.onnx

Token embeddings, RMSNorm, rotary embeddings (rotate-half), grouped-query
attention (4 query heads per KV head, KV heads repeated by Expand + Reshape),
a causal mask, SwiGLU MLP, a final RMSNorm and an untied LM head; batch and
sequence are dynamic (``input_ids``: batch x seq). numpy and onnx only.

Written streaming: each weight is generated, appended to ``<out>.data`` and
dropped before the next, so memory stays at one tensor whatever the size.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
ALIGNMENT = 1 << 16
DTYPES = {"fp32": (np.float32, TensorProto.FLOAT), "fp16": (np.float16, TensorProto.FLOAT16)}


@dataclass(frozen=True)
class Config:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def params(self) -> int:
        d, kv = self.hidden, self.kv_heads * self.head_dim
        layer = 2 * d * d + 2 * d * kv + 3 * d * self.mlp + 2 * d
        return self.layers * layer + 2 * self.vocab * d + d


def config_for(params: int) -> Config:
    """The LLaMA-like shape closest to ``params``: head_dim 64, 4 query heads per KV head, MLP 4x
    hidden rounded to 256, depth growing with width (hidden/128 layers, at least 2)."""
    best = None
    for hidden in range(256, 8193, 256):  # heads = hidden/64, a multiple of 4 KV groups
        vocab = 32000 if hidden >= 1024 else 8192
        heads = hidden // 64
        for layers in range(2, max(3, hidden // 32) + 1):
            c = Config(hidden, layers, heads, max(1, heads // 4), 4 * hidden, vocab)
            score = abs(math.log(c.params / params)) + 0.05 * abs(math.log(layers / max(2, hidden / 128)))
            if best is None or score < best[0]:
                best = (score, c)
    return best[1]


def parse_count(text: str) -> int:
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([kKmMbBgG]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}': expected a count such as 10M, 350M or 1B")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


class Writer:
    """Weights appended to one data file as they are made; the ModelProto gets only their references."""

    def __init__(self, data_path: Path, np_dtype, onnx_dtype: int, seed: int):
        self.stream = open(data_path, "wb")
        self.location = data_path.name
        self.np_dtype, self.onnx_dtype = np_dtype, onnx_dtype
        self.rng = np.random.default_rng(seed)
        self.initializers: list[TensorProto] = []

    def weight(self, name: str, shape: tuple[int, ...], scale: float) -> str:
        """Uniform random values of standard deviation ``scale`` (written row block by row block), at an
        offset aligned to 64 KiB as onnx writes large tensors (onnxruntime then maps them)."""
        self.stream.write(bytes(-self.stream.tell() % ALIGNMENT))
        rows = shape[0]
        step = max(1, (1 << 24) // max(1, math.prod(shape[1:])))
        half = scale * math.sqrt(3.0)
        for start in range(0, rows, step):
            block = self.rng.random((min(step, rows - start),) + shape[1:], dtype=np.float32)
            block = (block * np.float32(2 * half) - np.float32(half)).astype(self.np_dtype, copy=False)
            self._append(block)
        return self._reference(name, shape)

    def constant(self, name: str, value: np.ndarray) -> str:
        """A small tensor kept inside the model (norm weights start at 1)."""
        self.initializers.append(numpy_helper.from_array(value.astype(self.np_dtype), name))
        return name

    def _append(self, block: np.ndarray) -> None:
        self.stream.write(np.ascontiguousarray(block).astype(block.dtype.newbyteorder("<"), copy=False).tobytes())

    def _reference(self, name: str, shape: tuple[int, ...]) -> str:
        nbytes = math.prod(shape) * np.dtype(self.np_dtype).itemsize
        offset = self.stream.tell() - nbytes
        tensor = TensorProto(name=name, data_type=self.onnx_dtype, dims=list(shape),
                             data_location=TensorProto.EXTERNAL)
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(tensor)
        return name

    def close(self) -> None:
        self.stream.close()


def build(cfg: Config, out: Path, dtype: str = "fp32", seed: int = 0) -> onnx.ModelProto:
    """Write ``out`` and ``out.data``; returns the (weight-less) ModelProto written."""
    np_dtype, onnx_dtype = DTYPES[dtype]
    w = Writer(out.parent / f"{out.name}.data", np_dtype, onnx_dtype, seed)
    nodes: list[onnx.NodeProto] = []
    consts: list[TensorProto] = []
    d, hd, hq, hkv = cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def const(name, value):
        consts.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    const("axes_last", np.array([-1], np.int64))
    const("eps", np.array(1e-5, np_dtype))
    const("two", np.array(2.0, np_dtype))
    const("scale", np.array(1.0 / math.sqrt(hd), np_dtype))
    const("shape_q", np.array([0, 0, hq, hd], np.int64))
    const("shape_kv", np.array([0, 0, hkv, hd], np.int64))
    const("shape_rep", np.array([0, hq, -1, hd], np.int64))
    const("expand_rep", np.array([1, 1, hq // hkv, 1, 1], np.int64))
    const("shape_ctx", np.array([0, 0, hq * hd], np.int64))
    const("axis2", np.array([2], np.int64))
    const("half_start", np.array([hd // 2], np.int64))
    const("zero1", np.array([0], np.int64))
    const("big", np.array([hd], np.int64))
    const("one_i", np.array(1, np.int64))
    const("zero_i", np.array(0, np.int64))
    const("inv_freq", (1.0 / 10000 ** (np.arange(0, hd, 2, dtype=np.float64) / hd)).astype(np.float32))
    const("neg_inf", np.array(-1e4 if dtype == "fp16" else -1e9, np_dtype))
    const("zero_f", np.array(0.0, np_dtype))

    # positions, rotary tables (seq x head_dim) and the causal mask (seq x seq), from the input's length
    node("Shape", ["input_ids"], "ids_shape")
    node("Gather", ["ids_shape", "one_i"], "seq_len", axis=0)
    node("Range", ["zero_i", "seq_len", "one_i"], "positions")
    node("Cast", ["positions"], "positions_f", to=TensorProto.FLOAT)
    node("Unsqueeze", ["positions_f", "axes_last"], "positions_col")
    node("Mul", ["positions_col", "inv_freq"], "freqs")
    node("Concat", ["freqs", "freqs"], "angles", axis=-1)
    node("Cos", ["angles"], "cos32")
    node("Sin", ["angles"], "sin32")
    node("Cast", ["cos32"], "cos", to=onnx_dtype)
    node("Cast", ["sin32"], "sin", to=onnx_dtype)
    node("Unsqueeze", ["positions", "axes_last"], "rows")
    node("LessOrEqual", ["positions", "rows"], "visible")  # key position <= query position
    node("Where", ["visible", "zero_f", "neg_inf"], "causal")

    def rms_norm(x, prefix):
        weight = w.constant(f"{prefix}.weight", np.ones(d))
        node("Pow", [x, "two"], f"{prefix}.sq")
        node("ReduceMean", [f"{prefix}.sq"], f"{prefix}.ms", axes=[-1], keepdims=1)
        node("Add", [f"{prefix}.ms", "eps"], f"{prefix}.mse")
        node("Sqrt", [f"{prefix}.mse"], f"{prefix}.rms")
        node("Div", [x, f"{prefix}.rms"], f"{prefix}.normed")
        return node("Mul", [f"{prefix}.normed", weight], f"{prefix}.out")

    def linear(x, prefix, n_in, n_out):
        weight = w.weight(f"{prefix}.weight", (n_in, n_out), 1.0 / math.sqrt(n_in))
        return node("MatMul", [x, weight], f"{prefix}.out")

    def rotary(x, prefix):  # x: batch x heads x seq x head_dim
        node("Slice", [x, "zero1", "half_start", "axes_last"], f"{prefix}.x1")
        node("Slice", [x, "half_start", "big", "axes_last"], f"{prefix}.x2")
        node("Neg", [f"{prefix}.x2"], f"{prefix}.nx2")
        node("Concat", [f"{prefix}.nx2", f"{prefix}.x1"], f"{prefix}.rot", axis=-1)
        node("Mul", [x, "cos"], f"{prefix}.xc")
        node("Mul", [f"{prefix}.rot", "sin"], f"{prefix}.rs")
        return node("Add", [f"{prefix}.xc", f"{prefix}.rs"], f"{prefix}.out")

    embed = w.weight("embed_tokens.weight", (cfg.vocab, d), 0.02)
    x = node("Gather", [embed, "input_ids"], "embed.out", axis=0)
    for i in range(cfg.layers):
        p = f"layers.{i}"
        h = rms_norm(x, f"{p}.input_norm")
        q = linear(h, f"{p}.q_proj", d, hq * hd)
        k = linear(h, f"{p}.k_proj", d, hkv * hd)
        v = linear(h, f"{p}.v_proj", d, hkv * hd)
        node("Reshape", [q, "shape_q"], f"{p}.q4")
        node("Reshape", [k, "shape_kv"], f"{p}.k4")
        node("Reshape", [v, "shape_kv"], f"{p}.v4")
        node("Transpose", [f"{p}.q4"], f"{p}.qt", perm=[0, 2, 1, 3])
        node("Transpose", [f"{p}.k4"], f"{p}.kt", perm=[0, 2, 1, 3])
        node("Transpose", [f"{p}.v4"], f"{p}.vt", perm=[0, 2, 1, 3])
        qr = rotary(f"{p}.qt", f"{p}.q_rope")
        kr = rotary(f"{p}.kt", f"{p}.k_rope")
        for name, src in (("k", kr), ("v", f"{p}.vt")):  # repeat each KV head for its query heads
            node("Unsqueeze", [src, "axis2"], f"{p}.{name}5")
            node("Expand", [f"{p}.{name}5", "expand_rep"], f"{p}.{name}x")
            node("Reshape", [f"{p}.{name}x", "shape_rep"], f"{p}.{name}_rep")
        node("Transpose", [f"{p}.k_rep"], f"{p}.k_t", perm=[0, 1, 3, 2])
        node("MatMul", [qr, f"{p}.k_t"], f"{p}.scores_raw")
        node("Mul", [f"{p}.scores_raw", "scale"], f"{p}.scores_scaled")
        node("Add", [f"{p}.scores_scaled", "causal"], f"{p}.scores")
        node("Softmax", [f"{p}.scores"], f"{p}.probs", axis=-1)
        node("MatMul", [f"{p}.probs", f"{p}.v_rep"], f"{p}.ctx")
        node("Transpose", [f"{p}.ctx"], f"{p}.ctx_t", perm=[0, 2, 1, 3])
        node("Reshape", [f"{p}.ctx_t", "shape_ctx"], f"{p}.ctx3")
        o = linear(f"{p}.ctx3", f"{p}.o_proj", hq * hd, d)
        x = node("Add", [x, o], f"{p}.attn_res")
        h = rms_norm(x, f"{p}.post_norm")
        gate = linear(h, f"{p}.gate_proj", d, cfg.mlp)
        up = linear(h, f"{p}.up_proj", d, cfg.mlp)
        node("Sigmoid", [gate], f"{p}.gate_sig")
        node("Mul", [gate, f"{p}.gate_sig"], f"{p}.silu")
        node("Mul", [f"{p}.silu", up], f"{p}.swiglu")
        down = linear(f"{p}.swiglu", f"{p}.down_proj", cfg.mlp, d)
        x = node("Add", [x, down], f"{p}.mlp_res")
    h = rms_norm(x, "norm")
    logits = linear(h, "lm_head", d, cfg.vocab)
    nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
    w.close()
    graph = helper.make_graph(
        nodes, "llama",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info("logits", onnx_dtype, ["batch", "seq", cfg.vocab])],
        initializer=consts + w.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="onnxprune make_llm")
    model.ir_version = 8
    model.metadata_props.add(key="config", value=repr(cfg))
    onnx.save(model, str(out))
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the .onnx to write (its data goes to OUTPUT.data)")
    parser.add_argument("--params", type=parse_count, default=parse_count("100M"), help="about how many (10M..1B)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = config_for(args.params)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    build(cfg, args.output, args.dtype, args.seed)
    size = (args.output.parent / f"{args.output.name}.data").stat().st_size
    print(f"{args.output}: {cfg.params / 1e6:.1f}M parameters ({cfg}), {size / 2**20:.0f} MiB of external data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
