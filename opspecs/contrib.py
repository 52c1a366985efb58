"""onnxruntime's fused operators (domain com.microsoft), as optimum / ORT transformer optimizers emit them.

Where the channel mapping is plain, a rule: biased activations are elementwise
with a per-channel bias (exact: a zeroed channel stays 0); the skip and
embedding layer norms normalize over the hidden (last) axis like LayerNormalization
(valid but inexact: the statistics span the pruned channels: hidden-size
groups, pruned only with --prune-hidden). Fused
attention packs every head's Q, K and V into one tensor and numbers heads by
an attribute, and rotary embeddings pair dimensions within a head: those
axes are explicit barriers with the reason, not silent passes.
"""
from __future__ import annotations

from onnxprune.rules import IN, OUT, Barrier, Couple, Mark, NodeView, OpSpec, Port, Side, Trait

from ._common import broadcast, unary

MS = "com.microsoft"

HEADS = ("whole heads are prunable in principle (the same head_dim block of Q, K and V and num_heads), "
         "not implemented for the fused op")


def _biased_unary(view: NodeView, port: Port, axes):
    """gelu(x + bias) and friends: x and the output share every axis; the bias follows the last one."""
    return broadcast(view, port, axes)


def _skip_layer_norm(n_params: int):
    """SkipLayerNormalization(input, skip, gamma, beta, bias) / SkipSimplified...(input, skip, gamma, bias):
    input, skip, output and the input+skip+bias sum (output 3) share all axes; the 1-D
    parameters follow the hidden (last) axis, the only one normalized over."""

    def couple(view: NodeView, port: Port, axes):
        rank = view.rank(IN(0))
        if rank is None:
            return Barrier("rank unknown")
        hidden = rank - 1
        params = [IN(i) for i in range(2, 2 + n_params) if view.has_input(i)]
        stats = [OUT(i) for i in (1, 2) if i < view.n_outputs and view.node.outputs[i]]
        # skip may have fewer leading (batch) axes than input; it always ends in hidden
        full = [p for p in (IN(0), IN(1), OUT(0), OUT(3)) if view.tensor(p) and view.rank(p) == rank]
        if port in params:
            return [Couple(OUT(0), (hidden,))] if axes == (0,) else Barrier(f"parameter axes {axes}")
        if port in stats:
            return Barrier("mean / inverse std statistics")
        if port == IN(1) and view.rank(IN(1)) != rank:
            skip_hidden = view.rank(IN(1)) - 1
            return [Couple(OUT(0), (hidden,))] if tuple(axes) == (skip_hidden,) else Barrier("broadcast skip")
        if hidden not in axes:
            return [Couple(p, axes) for p in full + stats if p != port]
        if tuple(axes) != (hidden,):
            return Barrier(f"hidden axis merged with {axes}")
        skip = [] if IN(1) in full else [Couple(IN(1), (view.rank(IN(1)) - 1,))]
        return [Couple(p, axes) for p in full if p != port] + skip + [Couple(p, (0,)) for p in params] + \
            [Mark(Trait.STATISTICS, f"{view.node.op_type} statistics")]

    return couple


# EmbedLayerNormalization's inputs: ids, segment ids, word/position/segment tables, gamma, beta, mask, position ids
_EMBED_TABLES, _EMBED_NORM = (2, 3, 4), (5, 6)


def _embed_layer_norm(view: NodeView, port: Port, axes):
    """EmbedLayerNormalization: LayerNorm(word[ids] + position[pos] + segment[seg]), as BERT's fused
    embeddings. The tables' hidden axis (1), gamma/beta and the hidden (last) axis of the output and of
    the pre-norm sum (output 2) prune together; statistics span it (a hidden-size group, inexact)."""
    hidden_ends = [IN(i) for i in _EMBED_TABLES if view.has_input(i)] + \
        [IN(i) for i in _EMBED_NORM if view.has_input(i)] + \
        [OUT(i) for i in (0, 2) if i < view.n_outputs and view.node.outputs[i]]
    hidden_axis = {p: (1,) if p.side == Side.IN and p.slot in _EMBED_TABLES else (0,) if p.side == Side.IN
                   else (2,) for p in hidden_ends}
    if port not in hidden_axis or tuple(axes) != hidden_axis[port]:
        return Barrier(f"EmbedLayerNormalization {port} axes {list(axes)}: only the hidden axis prunes")
    return [Couple(p, hidden_axis[p]) for p in hidden_ends if p != port] + \
        [Mark(Trait.STATISTICS, "EmbedLayerNormalization statistics")]


def _embed_roots(view: NodeView):
    """Its tables own the hidden channels (as a projection's weight owns its output columns)."""
    return [(OUT(0), (2,))] if view.const(2) is not None else []


def _attention(view: NodeView, port: Port, axes):
    """Attention(input [B,S,in], weights [in, 3*hidden], bias [3*hidden], ...): the input width
    couples the weight rows exactly; the packed head outputs are a barrier."""
    rank = view.rank(IN(0))
    if rank is None:
        return Barrier("rank unknown")
    if port == IN(0) and tuple(axes) == (rank - 1,):
        return [Couple(IN(1), (0,))]
    if port == IN(1) and tuple(axes) == (0,):
        return [Couple(IN(0), (rank - 1,))]
    if port in (IN(1), IN(2), OUT(0)):
        return Barrier(f"fused Attention packs Q, K and V of {view.attr('num_heads')} heads in one weight: {HEADS}")
    return Barrier(f"Attention {port} (mask, past state or batch/sequence axes)")


def _heads_barrier(what: str):
    def couple(view: NodeView, port: Port, axes):
        return Barrier(f"{what} with num_heads={view.attr('num_heads')}: {HEADS}")
    return couple


def _rotary(view: NodeView, port: Port, axes):
    style = "2i with 2i+1" if view.attr("interleaved", 0) else "i with i + head_dim/2"
    return Barrier(f"RotaryEmbedding pairs dimension {style} within each head (and reads cos/sin caches "
                   "of head_dim/2): prune whole heads upstream, not the hidden axis here")


def register(registry) -> None:
    registry.register(OpSpec(("FastGelu", "BiasGelu", "BiasAdd"), _biased_unary, domain=MS, family="contrib"))
    registry.register(OpSpec(("Gelu", "QuickGelu"), unary, domain=MS, family="contrib"))
    registry.register(OpSpec(("SkipLayerNormalization",), _skip_layer_norm(3), domain=MS, exact=False,
                             param_roles={2: "norm_scale"}, family="contrib"))
    registry.register(OpSpec(("SkipSimplifiedLayerNormalization",), _skip_layer_norm(2), domain=MS, exact=False,
                             param_roles={2: "norm_scale"}, family="contrib"))
    registry.register(OpSpec(("EmbedLayerNormalization",), _embed_layer_norm, domain=MS, exact=False,
                             roots=_embed_roots,
                             param_roles={5: "norm_scale"}, family="contrib"))
    registry.register(OpSpec(("Attention",), _attention, domain=MS, family="contrib"))
    registry.register(OpSpec(("MultiHeadAttention",), _heads_barrier("MultiHeadAttention"), domain=MS,
                             family="contrib"))
    registry.register(OpSpec(("GroupQueryAttention",), _heads_barrier("GroupQueryAttention (KV heads shared by "
                                                                       "groups of query heads)"),
                             domain=MS, family="contrib"))
    registry.register(OpSpec(("RotaryEmbedding",), _rotary, domain=MS, family="contrib"))
