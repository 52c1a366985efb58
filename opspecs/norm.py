"""Per-channel normalizations: channel axis 1 couples input, output and every parameter."""
from __future__ import annotations

from onnxprune.mapping import Overlap, compose
from onnxprune.rules import IN, OUT, Barrier, Couple, Mark, NodeView, NormAffine, OpSpec, RunningStats, Trait, Updates

from . import affine


def _per_channel(n_params: int, spatial_coupled: bool):
    """Input/output share all axes; params (inputs 1..n) carry axis 1 on their axis 0."""

    def couple(view: NodeView, port, axes):
        params = [IN(i) for i in range(1, 1 + n_params) if view.has_input(i)]
        extra_outs = [OUT(i) for i in range(1, view.n_outputs) if view.node.outputs[i]]
        if port in params or port in extra_outs:
            return [Couple(OUT(0), (1,))] if axes == (0,) else Barrier(f"parameter axis {axes}")
        if port not in (IN(0), OUT(0)):
            return Barrier(f"unexpected port {port}")
        other = OUT(0) if port == IN(0) else IN(0)
        if 1 not in axes:
            if not spatial_coupled and any(a >= 2 for a in axes):
                return Barrier("normalization statistics span these axes")
            return [Couple(other, axes)]
        if axes != (1,):
            return Barrier(f"channel axis merged with {axes}")
        return [Couple(other, (1,))] + [Couple(p, (0,)) for p in params + extra_outs]

    return couple


def _lrn(view: NodeView, port, axes):
    """LRN normalizes over neighbouring channels: pruning keeps shapes valid but
    changes each kept channel's window, so it is not equivalent to zeroing."""
    return [Couple(OUT(0) if port == IN(0) else IN(0), axes)]


def _layer_norm(view: NodeView, port, axes):
    """LayerNormalization over axes [axis, rank): a single normalized axis (channels-last
    LayerNorm, as in ConvNeXt and Transformers) prunes with its scale and bias; removing a
    channel changes the mean/variance of the others, so this is not zero-equivalent."""
    rank = view.rank(IN(0))
    if rank is None:
        return Barrier("rank unknown")
    axis = int(view.attr("axis", -1)) % rank
    normalized = list(range(axis, rank))
    stats = [OUT(i) for i in (1, 2) if i < view.n_outputs and view.node.outputs[i]]
    if port in (IN(1), IN(2)):
        return [Couple(OUT(0), tuple(a + axis for a in axes))]
    if port in stats:
        return [Couple(OUT(0), axes)] if not set(axes) & set(normalized) else Barrier("statistics axis")
    other = OUT(0) if port == IN(0) else IN(0)
    if not set(axes) & set(normalized):
        return [Couple(other, axes)] + [Couple(p, axes) for p in stats]
    if len(normalized) != 1 or tuple(axes) != (axis,):
        return Barrier(f"axes {axes} mix several normalized axes")
    params = [Couple(IN(i), (0,)) for i in (1, 2) if view.has_input(i)]
    return [Couple(other, axes)] + params + [Mark(Trait.STATISTICS, f"{view.node.op_type} statistics")]


def _norm_affine(shift_slot: int | None):
    """LayerNormalization's signature (X, scale, bias): statistics over [axis, rank), a scale and
    shift per channel of the last axis; recovery re-fits them where that is one axis (the hidden
    size) and they are constant vectors (a missing bias can be added at ``shift_slot``)."""

    def norm_affine(view: NodeView) -> NormAffine | None:
        rank = view.rank(IN(0))
        if rank is None or int(view.attr("axis", -1)) % rank != rank - 1:
            return None
        scale = view.const(1)
        if scale is None or scale.ndim != 1 or scale.dtype.kind != "f":
            return None
        if shift_slot is not None and view.has_input(shift_slot):
            shift = view.const(shift_slot)
            if shift is None or shift.shape != scale.shape:
                return None
        return NormAffine(input_slot=0, axis=rank - 1, scale_slot=1, shift_slot=shift_slot)

    return norm_affine


def _group_norm(view: NodeView, port, axes):
    """GroupNormalization: statistics per group of C/G channels, so removing whole groups leaves
    the others' statistics alone (exact). Channels of a group are tied together; the scale and
    bias are per channel (opset 21; onnx deprecates the per-group form of opset 18)."""
    shape = view.shape(IN(0))
    if shape is None:
        return Barrier("shape unknown")
    groups = int(view.attr("num_groups"))
    per_group = shape[1] // groups
    if port in (IN(1), IN(2)):
        return [Couple(OUT(0), (1,))]
    other = OUT(0) if port == IN(0) else IN(0)
    if 1 not in axes:
        if any(a >= 2 for a in axes):
            return Barrier("normalization statistics span these axes")
        return [Couple(other, axes)]
    if tuple(axes) != (1,):
        return Barrier(f"channel axis merged with {axes}")
    whole = compose(Overlap(1, per_group), Overlap(per_group, 1), groups)  # channel -> its group -> its channels
    return [Couple(other, (1,)), Couple(port, (1,), whole)] + \
        [Couple(IN(i), (0,)) for i in (1, 2) if view.has_input(i)]


def _rewrite_group_norm(view: NodeView, changes) -> Updates:
    change = changes.get(IN(0)) or changes.get(OUT(0))
    if change is None or 1 not in change.kept:
        return Updates()
    per_group = change.old_shape[1] // int(view.attr("num_groups"))
    return Updates(attrs={"num_groups": len(change.kept[1]) // per_group})


def register(registry) -> None:
    registry.register(OpSpec(("GroupNormalization",), _group_norm, since=21, rewrite=_rewrite_group_norm,
                             param_roles={1: "norm_scale"}, family="norm"))
    registry.register(OpSpec(("LayerNormalization",), _layer_norm, since=17, param_roles={1: "norm_scale"},
                             exact=False, norm_affine=_norm_affine(2), family="norm"))
    # RMSNorm: LayerNormalization's signature without the mean (scale only). onnxruntime's fused
    # SimplifiedLayerNormalization lives in the default domain (optimum exports write it there;
    # onnxruntime has none in com.microsoft), ONNX's own RMSNormalization came with opset 23
    registry.register(OpSpec(("SimplifiedLayerNormalization",), _layer_norm, param_roles={1: "norm_scale"},
                             exact=False, norm_affine=_norm_affine(None), family="norm"))
    registry.register(OpSpec(("RMSNormalization",), _layer_norm, since=23, param_roles={1: "norm_scale"},
                             exact=False, norm_affine=_norm_affine(None), family="norm"))
    registry.register(OpSpec(("BatchNormalization",), _per_channel(4, spatial_coupled=True),
                             running_stats=RunningStats(input_slot=0, axis=1, mean_slot=3, var_slot=4, scale_slot=1,
                                                                      shift_slot=2),
                             param_roles={1: "bn_scale"}, neutral={4: 1.0}, affine=affine.batch_norm, family="norm"))
    registry.register(OpSpec(("InstanceNormalization",), _per_channel(2, spatial_coupled=False),
                             param_roles={1: "norm_scale"}, family="norm"))
    registry.register(OpSpec(("LRN",), _lrn, exact=False, family="norm"))
