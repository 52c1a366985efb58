"""Windowed attention as torchvision's Swin exports it (TorchScript), for ``scripts/build_realworld_models.py``.

``swin_windows``: one shifted-window transformer block on a (batch, 4, 4, 8) feature map, laid out as
torch.onnx's TorchScript exporter writes ``torchvision.models.swin_transformer.shifted_window_attention``:
``B, H, W, C`` read from the normed input's ``Shape`` at run time; Pad to whole windows with amounts computed
at run time; the cyclic shift (``torch.roll``) as Slice + Concat along H and W; the window partition
(Reshape to (B, H/w, w, W/w, w, C), Transpose, Reshape to (B*nW, w*w, C)); q, k, v from one linear split at
once to (3, heads, C // heads) and picked apart by Gather; relative position bias and the shifted-window
mask added (the mask through a view to (B, nW, heads, N, N)); the attention output viewed back to C; the
window reverse and the roll back; a residual; an MLP block; mean pooling and a linear head. Every Reshape
target is a Concat of run-time Shape reads and constants, as in the real export.

``swin_windows_affine``: the same block with each LayerNorm reduced to its per-channel affine, so that the
width (the channel axis through Pad, roll, window partition and reverse) prunes exactly like zeroing.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 17
SIDE, WINDOW, WIDTH, HEADS, MLP, CLASSES, PIXEL = 4, 2, 8, 2, 16, 3, 6


class _Graph:
    def __init__(self, norm: bool, seed: int = SEED):
        self.norm = norm
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, value, dtype=np.int64) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weight(self, shape, scale: float) -> str:
        return self.const(self.rng.standard_normal(shape) * scale, np.float32)

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self.count += 1
        out = f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"/{op_type}_{self.count}", **attrs))
        return out

    def dim(self, x: str, axis: int) -> str:
        """x.size(axis) as a scalar read at run time."""
        return self.op("Gather", self.op("Shape", x), self.const(axis), axis=0)

    def target(self, *pieces) -> str:
        """A view's target as TorchScript writes it: each piece an unsqueezed scalar or a constant [v]."""
        parts = [self.const([p]) if isinstance(p, int) else self.op("Unsqueeze", p, self.const([0])) for p in pieces]
        return self.op("Concat", *parts, axis=0)

    def linear(self, x: str, fin: int, fout: int) -> str:
        w = self.weight([fin, fout], np.sqrt(2.0 / fin))
        return self.op("Add", self.op("MatMul", x, w), self.weight([fout], 0.1))

    def layer_norm(self, x: str) -> str:
        """LayerNorm, or (``norm`` False) only its per-channel affine: then pruning C equals zeroing it."""
        gamma, beta = self.const(1 + 0.2 * self.rng.standard_normal(WIDTH), np.float32), self.weight([WIDTH], 0.1)
        if not self.norm:
            return self.op("Add", self.op("Mul", x, gamma), beta)
        return self.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=1e-5)

    def roll(self, x: str, shift: int, axis: int) -> str:
        """torch.roll along one axis as TorchScript exports it: two Slices and a Concat."""
        big = np.iinfo(np.int64).max
        tail = self.op("Slice", x, self.const([-shift]), self.const([big]), self.const([axis]))
        head = self.op("Slice", x, self.const([0]), self.const([-shift]), self.const([axis]))
        return self.op("Concat", tail, head, axis=axis)


def _shift_mask() -> np.ndarray:
    """Swin's attention mask for a shift of w/2 on a (SIDE, SIDE) map: -100 between tokens from different regions."""
    shift = WINDOW // 2
    region = np.zeros((SIDE, SIDE), np.int64)
    cuts = (slice(0, -WINDOW), slice(-WINDOW, -shift), slice(-shift, None))
    for k, (hs, ws) in enumerate((h, w) for h in cuts for w in cuts):
        region[hs, ws] = k
    windows = region.reshape(SIDE // WINDOW, WINDOW, SIDE // WINDOW, WINDOW).transpose(0, 2, 1, 3)
    windows = windows.reshape(-1, WINDOW * WINDOW)
    mask = np.where(windows[:, None, :] != windows[:, :, None], -100.0, 0.0).astype(np.float32)
    return mask[None, :, None]  # (1, nW, 1, N, N)


def swin_windows(norm: bool = True) -> onnx.ModelProto:
    g = _Graph(norm)
    n_windows, tokens, head_dim = (SIDE // WINDOW) ** 2, WINDOW * WINDOW, WIDTH // HEADS
    x = g.linear("x", PIXEL, WIDTH)  # patch embedding
    normed = g.layer_norm(x)
    batch, height, width, channels = (g.dim(normed, a) for a in range(4))
    # pad to whole windows: pad_b = (w - H % w) % w, likewise pad_r, at run time
    w_const = g.const(WINDOW)
    pad_b, pad_r = (g.op("Mod", g.op("Sub", w_const, g.op("Mod", d, w_const)), w_const) for d in (height, width))
    pads = g.target(0, 0, 0, 0, 0, pad_b, pad_r, 0)
    padded = g.op("Pad", normed, pads, mode="constant")
    ph, pw = g.dim(padded, 1), g.dim(padded, 2)
    shifted = g.roll(g.roll(padded, -(WINDOW // 2), 1), -(WINDOW // 2), 2)
    nh, nw = g.op("Div", ph, w_const), g.op("Div", pw, w_const)
    parts = g.op("Reshape", shifted, g.target(batch, nh, WINDOW, nw, WINDOW, channels))
    windows = g.op("Reshape", g.op("Transpose", parts, perm=[0, 1, 3, 2, 4, 5]),
                   g.target(g.op("Mul", batch, g.op("Mul", nh, nw)), tokens, channels))
    qkv = g.linear(windows, WIDTH, 3 * WIDTH)
    rows, seq = g.dim(windows, 0), g.dim(windows, 1)
    split = g.op("Reshape", qkv, g.target(rows, seq, 3, HEADS, g.op("Div", channels, g.const(HEADS))))
    split = g.op("Transpose", split, perm=[2, 0, 3, 1, 4])
    q, k, v = (g.op("Gather", split, g.const(i), axis=0) for i in range(3))
    q = g.op("Mul", q, g.const(head_dim ** -0.5, np.float32))
    attn = g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2]))
    attn = g.op("Add", attn, g.weight([1, HEADS, tokens, tokens], 0.5))  # relative position bias
    per_image = g.op("Div", rows, g.const(n_windows))
    attn = g.op("Reshape", attn, g.target(per_image, n_windows, HEADS, seq, seq))
    attn = g.op("Add", attn, g.const(_shift_mask(), np.float32))
    attn = g.op("Reshape", attn, g.target(-1, HEADS, seq, seq))
    attn = g.op("Softmax", attn, axis=-1)
    out = g.op("Transpose", g.op("MatMul", attn, v), perm=[0, 2, 1, 3])
    out = g.op("Reshape", out, g.target(rows, seq, channels))
    out = g.linear(out, WIDTH, WIDTH)
    out = g.op("Reshape", out, g.target(batch, nh, nw, WINDOW, WINDOW, channels))
    out = g.op("Reshape", g.op("Transpose", out, perm=[0, 1, 3, 2, 4, 5]), g.target(batch, ph, pw, channels))
    out = g.roll(g.roll(out, WINDOW // 2, 1), WINDOW // 2, 2)
    out = g.op("Slice", out, g.const([0, 0]), g.op("Concat", g.op("Unsqueeze", height, g.const([0])),
                                                   g.op("Unsqueeze", width, g.const([0])), axis=0),
               g.const([1, 2]))  # unpad: x[:, :H, :W, :]
    h = g.op("Add", x, out)
    mlp = g.linear(g.op("Relu", g.linear(g.layer_norm(h), WIDTH, MLP)), MLP, WIDTH)
    h = g.op("Add", h, mlp)
    pooled = g.op("ReduceMean", h, g.const([1, 2]), keepdims=0)
    logits = g.op("MatMul", pooled, g.weight([WIDTH, CLASSES], np.sqrt(2.0 / WIDTH)))
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="/output"))
    graph = helper.make_graph(
        g.nodes, "swin_windows" if norm else "swin_windows_affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SIDE, SIDE, PIXEL])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="build_realworld_models")
    model.ir_version = 8
    return model


WINDOWS = {
    "swin_windows": (swin_windows, "torchvision Swin's shifted-window block as its TorchScript export lays it out: "
                                   "sizes read by Shape at run time, run-time Pad, roll as Slice + Concat, window "
                                   "partition/reverse, q/k/v split to (3, heads, head_dim), bias and shift mask, "
                                   "MLP; x [batch, 4, 4, 6], linear embedding to 8, window 2, 2 heads"),
    "swin_windows_affine": (lambda: swin_windows(norm=False), "swin_windows with each LayerNorm reduced to its "
                                                              "per-channel affine (the width prunes exactly)"),
}
