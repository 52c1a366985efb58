"""Fusion and re-parameterization (onnxprune/passes/fusion): every fusion is exact (the fused
model's outputs equal the original's through onnxruntime), every refusal says why, and each
map says what merged into what."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune import onnx_in, onnx_out
from onnxprune.api import Pruner
from onnxprune.options import FuseOptions
from onnxprune.passes.fusion import Fuse
from onnxprune.registry import builtin_registry
from support.builder import GraphBuilder
from support.oracle import refit_without_duplicate, run
from support.fusion import assert_exact, fuse, ops
from support.small_models import repvgg_block


def _affine_consts(b: GraphBuilder, c: int, rank: int = 4):
    shape = (c,) + (1,) * (rank - 2)
    scale = b.const(np.linspace(0.5, 2.0, c).astype(np.float32).reshape(shape))
    shift = b.const(np.linspace(-1.0, 1.0, c).astype(np.float32).reshape(shape))
    return scale, shift


# --- affine nodes after a layer ---------------------------------------------------------------
def test_batchnorm_after_conv_folds_and_the_map_says_so():
    b = GraphBuilder(seed=1)
    x = b.input("x", [2, 3, 8, 8])
    conv = b.conv(x, 6, bias=False)
    bn = b.bn(conv)
    b.output(b.rename(b.conv(b.relu(bn), 4), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv", "Relu", "Conv"]
    assert_exact(model, fused)
    edits = result.edits
    conv_node = next(n.name for n in model.graph.node if n.op_type == "Conv")
    bn_node = next(n.name for n in model.graph.node if n.op_type == "BatchNormalization")
    assert edits.nodes[bn_node] == conv_node and edits.merged_nodes == {conv_node: (conv_node, bn_node)}
    assert edits.tensors[bn] == bn  # the fused conv now computes the BatchNorm's output
    assert edits.tensors[conv] is None  # the pre-BN values exist no more
    assert not edits.changed


def test_mul_and_add_by_per_channel_constants_fold_after_gemm_and_matmul():
    b = GraphBuilder(seed=2)
    x = b.input("x", [4, 6])
    scale, shift = _affine_consts(b, 5, rank=2)
    g = b.op("Add", [b.op("Mul", [b.gemm(x, 5), scale]), shift])
    w = b.param((5, 7), scale=0.4)
    m = b.op("MatMul", [g, w])
    m = b.op("Add", [m, b.param((7,), scale=0.1)])  # the MatMul's bias
    m = b.op("Div", [m, b.const(np.linspace(1.0, 3.0, 7).astype(np.float32))])
    b.output(b.rename(b.op("Sub", [m, b.const(np.float32(0.25))]), "y"))
    model = b.build()
    fused, result = fuse(model, kinds="affine")
    assert ops(fused) == ["Gemm", "MatMul", "Add"], ops(fused)
    assert_exact(model, fused)
    assert result.edits.tensors["y"] == "y"  # a graph output keeps its name
    fused, _ = fuse(model)  # and then the two layers merge
    assert ops(fused) == ["Gemm"]
    assert_exact(model, fused)


def test_shift_after_a_layer_without_a_bias_is_refused():
    b = GraphBuilder(seed=3)
    x = b.input("x", [2, 3, 6])
    y = b.op("MatMul", [x, b.param((6, 4))])
    b.output(b.rename(b.op("Sub", [y, b.const(np.linspace(0, 1, 4).astype(np.float32))]), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["MatMul", "Sub"]
    assert any("has no bias to take the shift" in r for r in result.refused), result.refused


def test_constants_that_vary_along_other_axes_are_refused():
    b = GraphBuilder(seed=4)
    x = b.input("x", [1, 3, 4, 4])
    spatial = b.const(np.linspace(0.5, 1.5, 16).astype(np.float32).reshape(1, 1, 4, 4))
    b.output(b.rename(b.op("Mul", [b.conv(x, 4), spatial]), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv", "Mul"]
    assert any("vary along other axes" in r for r in result.refused), result.refused


# --- affine nodes before a layer --------------------------------------------------------------
def test_scale_and_shift_before_an_unpadded_conv_fold():
    b = GraphBuilder(seed=5)
    x = b.input("x", [1, 4, 8, 8])
    scale, shift = _affine_consts(b, 4)
    scaled = b.op("Mul", [x, scale])
    y = b.op("Add", [scaled, shift])
    b.output(b.rename(b.conv(y, 6, k=3, pad=0, group=2), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv"]
    conv = model.graph.node[-1].name
    assert result.edits.merged_nodes == {conv: tuple(n.name for n in model.graph.node)}
    assert result.edits.tensors[scaled] is None and result.edits.tensors[y] is None
    assert_exact(model, fused)


def test_shift_before_a_zero_padded_conv_is_refused_but_a_scale_folds():
    b = GraphBuilder(seed=6)
    x = b.input("x", [1, 4, 8, 8])
    scale, shift = _affine_consts(b, 4)
    shifted = b.conv(b.op("Add", [x, shift]), 3, k=3, pad=1)
    scaled = b.conv(b.op("Mul", [x, scale]), 3, k=3, pad=1)
    b.output([b.rename(shifted, "a"), b.rename(scaled, "b")])
    model = b.build()
    fused, result = fuse(model)
    assert sorted(ops(fused)) == ["Add", "Conv", "Conv"]
    assert any("a shift before a zero-padded layer" in r and "not exact at its borders" in r
               for r in result.refused), result.refused
    assert_exact(model, fused)


def test_batchnorm_before_a_dense_layer_folds():
    b = GraphBuilder(seed=7)
    x = b.input("x", [3, 5])
    b.output(b.rename(b.gemm(b.bn(x), 4), "y"))
    model = b.build()
    fused, _ = fuse(model)
    assert ops(fused) == ["Gemm"]
    assert_exact(model, fused)


def test_a_per_channel_weight_folds_into_every_layer_that_reads_it():
    b = GraphBuilder(seed=22)
    x = b.input("x", [2, 5, 8])
    normed = b.op("Mul", [x, b.const(np.linspace(0.5, 1.5, 8).astype(np.float32))])  # an RMSNorm's weight
    outs = [b.op("MatMul", [normed, b.param((8, 8))]) for _ in range(3)]
    b.output([b.rename(o, f"y{k}") for k, o in enumerate(outs)] + [b.rename(b.op("Shape", [normed]), "s")])
    model = b.build()
    fused, result = fuse(model)
    assert sorted(ops(fused)) == ["MatMul", "MatMul", "MatMul", "Shape"] and result.changed == 1
    assert_exact(model, fused)


# --- consecutive linear layers ----------------------------------------------------------------
def test_conv_then_pointwise_conv_merge_into_the_conv():
    b = GraphBuilder(seed=8)
    x = b.input("x", [1, 3, 9, 9])
    first = b.conv(x, 8, k=3, stride=2)
    b.output(b.rename(b.conv(first, 4, k=1), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv"] and result.notes == ("merge consecutive: 1",)
    names = [n.name for n in model.graph.node]
    assert result.edits.nodes == {names[0]: names[0], names[1]: names[0]}
    assert result.edits.tensors[first] is None and result.edits.tensors["y"] == "y"
    (weight,) = [t for t in fused.graph.initializer if len(t.dims) == 4]
    assert tuple(weight.dims) == (4, 3, 3, 3)
    assert_exact(model, fused)


def test_pointwise_conv_then_padded_conv_merge_only_without_a_bias_between():
    def model_with(bias: bool):
        b = GraphBuilder(seed=9)
        x = b.input("x", [1, 3, 7, 7])
        b.output(b.rename(b.conv(b.conv(x, 8, k=1, bias=bias), 4, k=3, pad=1), "y"))
        return b.build()

    plain = model_with(bias=False)
    fused, _ = fuse(plain)
    assert ops(fused) == ["Conv"]
    assert_exact(plain, fused)
    biased = model_with(bias=True)
    fused, result = fuse(biased)
    assert ops(fused) == ["Conv", "Conv"]
    assert any("bias before a zero-padded layer" in r for r in result.refused), result.refused


def test_dense_layers_in_a_row_merge_and_a_bottleneck_does_not():
    b = GraphBuilder(seed=10)
    x = b.input("x", [2, 5, 16])
    h = b.op("Add", [b.op("MatMul", [x, b.param((16, 12))]), b.param((12,))])
    h = b.op("Add", [b.op("MatMul", [h, b.param((12, 8))]), b.param((8,))])
    wide = b.op("MatMul", [h, b.param((8, 2))])  # 8 -> 2 -> 16: merging would cost more
    b.output(b.rename(b.op("MatMul", [wide, b.param((2, 16))]), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused).count("MatMul") == 2, ops(fused)
    assert any("cost more multiply-adds" in r for r in result.refused), result.refused
    assert_exact(model, fused, rtol=1e-4, atol=1e-4)


def test_gemm_then_gemm_merge():
    b = GraphBuilder(seed=11)
    x = b.input("x", [3, 10])
    b.output(b.rename(b.gemm(b.gemm(x, 8, transB=0), 6), "y"))
    model = b.build()
    fused, _ = fuse(model)
    assert ops(fused) == ["Gemm"]
    assert_exact(model, fused)


def test_grouped_layers_and_an_activation_between_do_not_merge():
    b = GraphBuilder(seed=12)
    x = b.input("x", [1, 4, 6, 6])
    y = b.conv(b.conv(x, 4, k=3, group=4), 8, k=1)  # depthwise then pointwise
    b.output(b.rename(b.conv(b.relu(y), 4, k=1), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv", "Conv", "Relu", "Conv"]
    assert any("groups differ (4 and 1)" in r for r in result.refused), result.refused


# --- parallel branches (RepVGG) ---------------------------------------------------------------
@pytest.mark.parametrize("group,identity_bn,one_sum", [(1, True, False), (2, True, False), (8, False, False),
                                                     (1, True, True), (8, False, True)])
def test_repvgg_block_becomes_one_conv(group, identity_bn, one_sum):
    model = repvgg_block(group=group, identity_bn=identity_bn, one_sum=one_sum)
    fused, result = fuse(model)
    assert ops(fused) == ["Conv", "Relu", "Conv", "Relu"], ops(fused)
    assert_exact(model, fused)
    block = [n for n in model.graph.node if n.op_type in ("Conv", "BatchNormalization", "Add", "Sum")][1:]
    merged = result.edits.merged_nodes
    (into,) = [new for new, olds in merged.items() if len(olds) > 2]
    assert set(merged[into]) == {n.name for n in block}


def test_parallel_dense_layer_and_skip_merge():
    b = GraphBuilder(seed=14)
    x = b.input("x", [2, 3, 6])
    h = b.op("Add", [b.op("MatMul", [x, b.param((6, 6))]), b.param((6,))])
    b.output(b.rename(b.op("Add", [h, x]), "y"))
    model = b.build()
    fused, _ = fuse(model)
    assert ops(fused) == ["MatMul", "Add"]
    assert_exact(model, fused)


def test_parallel_kernels_that_do_not_nest_are_refused():
    b = GraphBuilder(seed=15)
    x = b.input("x", [1, 4, 9, 9])
    near = b.conv(x, 4, k=3, pad=1)
    far = b.conv(x, 4, k=3, pad=2, dilation=2)
    b.output(b.rename(b.op("Add", [near, far]), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv", "Conv", "Add"]
    assert any("neither kernel's taps" in r for r in result.refused), result.refused


# --- pass-through nodes -----------------------------------------------------------------------
def test_identity_and_inference_dropout_are_dropped_also_before_a_graph_output():
    b = GraphBuilder(opset=13, seed=16)
    x = b.input("x", [1, 3, 5, 5])
    y = b.op("Dropout", [b.op("Identity", [b.conv(x, 4)])])
    b.output(b.rename(b.op("Identity", [b.relu(y)]), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv", "Relu"]
    assert [o.name for o in fused.graph.output] == ["y"]
    assert_exact(model, fused)
    assert len(result.edits.deleted_nodes) == 3


def test_training_dropout_and_an_input_to_output_identity_stay():
    b = GraphBuilder(opset=13, seed=17)
    x = b.input("x", [1, 3, 5, 5])
    on = b.const(np.array(True))
    b.output(b.rename(b.op("Dropout", [b.conv(x, 4), b.const(np.float32(0.0)), on]), "y"))
    b.output(b.rename(b.op("Identity", [x]), "x_copy"))
    model = b.build()
    fused, result = fuse(model)
    assert sorted(ops(fused)) == ["Conv", "Dropout", "Identity"]
    reasons = " | ".join(result.refused)
    assert "training_mode is on" in reasons and "graph input to a graph output" in reasons


# --- refusals that protect the rest of the graph ----------------------------------------------
def test_a_weight_shared_outside_the_match_is_refused_a_shared_zero_bias_is_copied():
    b = GraphBuilder(seed=18)
    x = b.input("x", [1, 3, 6, 6])
    w = b.param((4, 3, 3, 3), scale=0.3)
    zero = b.const(np.zeros(4, np.float32))
    first = b.op("Conv", [x, w, zero], kernel_shape=[3, 3], pads=[1] * 4)
    second = b.op("Conv", [x, w, zero], kernel_shape=[3, 3], pads=[1] * 4)
    b.output([b.rename(b.bn(first), "a"), b.rename(second, "b")])
    model = b.build()
    fused, result = fuse(model)
    assert "BatchNormalization" in ops(fused)
    assert any(f"weight {w} is shared with" in r for r in result.refused), result.refused

    b = GraphBuilder(seed=19)
    x = b.input("x", [1, 3, 6, 6])
    zero = b.const(np.zeros(4, np.float32))
    convs = [b.op("Conv", [x, b.param((4, 3, 3, 3), scale=0.3), zero], kernel_shape=[3, 3], pads=[1] * 4)
             for _ in range(2)]
    b.output([b.rename(b.bn(convs[0]), "a"), b.rename(convs[1], "b")])
    model = b.build()
    fused, result = fuse(model)
    assert "BatchNormalization" not in ops(fused) and not result.refused
    assert_exact(model, fused)


def test_an_intermediate_tensor_read_elsewhere_or_a_graph_output_is_refused():
    b = GraphBuilder(seed=20)
    x = b.input("x", [1, 3, 6, 6])
    conv = b.conv(x, 4)
    b.output([b.rename(b.bn(conv), "a"), conv])
    model = b.build()
    fused, result = fuse(model)
    assert "BatchNormalization" in ops(fused)
    assert any("is a graph output" in r for r in result.refused), result.refused


def test_integer_layers_are_left_alone():
    b = GraphBuilder(seed=21)
    x = b.input("x", [2, 4], dtype=np.int32)
    y = b.op("MatMul", [x, b.const(np.arange(12, dtype=np.int32).reshape(4, 3))])
    b.output(b.rename(b.op("Mul", [y, b.const(np.array([1, 2, 3], np.int32))]), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["MatMul", "Mul"] and result.changed == 0


def test_kinds_choose_the_fusions():
    model = repvgg_block()
    fused, result = fuse(model, kinds="passthrough,affine")
    assert ops(fused).count("Add") == 2 and ops(fused).count("BatchNormalization") == 1  # the skip path's
    assert "merge parallel" not in " ".join(result.notes)
    with pytest.raises(Exception, match="unknown kind"):
        FuseOptions("affine,magic").check()


def test_the_input_graph_is_not_modified():
    model = repvgg_block()
    graph = onnx_in.from_model(model)
    before = [(n.name, list(n.inputs), list(n.outputs)) for n in graph.nodes]
    result = Fuse(builtin_registry()).run(graph)
    assert result.changed > 0 and before == [(n.name, list(n.inputs), list(n.outputs)) for n in graph.nodes]
    assert_exact(model, onnx_out.to_model(result.graph))


# --- what comes after a fusion follows its map ------------------------------------------------
def _duplicate_channel_chain():
    """conv_a (channel 3 duplicates channel 1) -> relu -> conv_b -> BN -> relu -> conv_c."""
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 3, 8, 8])
    a = b.conv(x, 6)
    for init in b.inits:
        if init.name in b.nodes[-1].input[1:]:
            value = onnx.numpy_helper.to_array(init).copy()
            value[3] = value[1]
            init.CopyFrom(onnx.numpy_helper.from_array(value, init.name))
    conv_b = b.conv(b.relu(a), 5, bias=False)
    b.output(b.rename(b.conv(b.relu(b.bn(conv_b)), 2), "y"))
    return b.build(), a, conv_b


def test_recovery_after_fusion_fits_the_fused_layer_to_the_batchnorm_output():
    model, conv_a, conv_b = _duplicate_channel_chain()
    pruner = Pruner.from_model(model)
    assert pruner.fuse().changed == 1
    assert pruner.edits.tensors[conv_b] is None  # the conv's own output is gone: recovery cannot fit to it
    result = refit_without_duplicate(pruner, conv_a, 3)
    assert result.kept
    assert_exact(model, pruner.to_model(), rtol=1e-3, atol=1e-3)


def test_prune_then_fuse_is_one_map_from_the_original():
    from support.architectures import ARCHITECTURES
    model = ARCHITECTURES["resnet_basic"]()
    pruner = Pruner.from_model(model)
    pruner.prune(ratio=0.5)
    kept = dict(pruner.edits.kept)
    pruner.fuse()
    producers = {o: n for n in model.graph.node for o in n.output}
    norms = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert norms
    for bn in norms:
        conv = producers[bn.input[0]]
        assert pruner.edits.nodes[bn.name] == conv.name and pruner.edits.tensors[conv.output[0]] is None
        assert pruner.edits.tensors[bn.output[0]] == bn.output[0]
        np.testing.assert_array_equal(pruner.edits.kept[bn.output[0]][1], kept[bn.output[0]][1])


def test_a_tensor_read_inside_a_subgraph_keeps_its_producer():
    from onnx import TensorProto, helper
    b = GraphBuilder(opset=17, seed=23)
    x = b.input("x", [1, 3, 4, 4])
    cond = b.input("cond", [], dtype=np.bool_)
    t = b.op("Identity", [b.conv(x, 6)])
    out_vi = [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [1, 6, 4, 4])]
    then = helper.make_graph([helper.make_node("Relu", [t], ["branch_out"])], "then", [], out_vi)
    other = helper.make_graph([helper.make_node("Neg", [t], ["branch_out"])], "else", [], out_vi)
    b.output(b.rename(b.op("If", [cond], then_branch=then, else_branch=other), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert "Identity" in ops(fused) and any("read inside a subgraph" in r for r in result.refused), result.refused
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32), "cond": np.array(True)}
    np.testing.assert_allclose(run(fused, feeds)[0], run(model, feeds)[0], rtol=1e-6)



# --- transposed convolutions (rows with no fixed window) --------------------------------------
def _conv_transpose(b, x, cout, k=2, stride=2, bias=True, **attrs):
    cin = b.shape_of(x)[1]
    ins = [x, b.param((cin, cout, k, k), scale=0.3)] + ([b.param((cout,), scale=0.1)] if bias else [])
    return b.op("ConvTranspose", ins, kernel_shape=[k, k], strides=[stride, stride], **attrs)


def test_transposed_conv_folds_a_batchnorm_after_it_and_merges_a_pointwise_conv_after_it():
    b = GraphBuilder(seed=21)
    x = b.input("x", [1, 4, 5, 5])
    y = _conv_transpose(b, x, 6)
    scale, shift = _affine_consts(b, 6)
    y = b.op("Add", [b.op("Mul", [y, scale]), shift])
    b.output(b.rename(b.conv(y, 3, k=1), "y"))
    model = b.build()
    fused, _ = fuse(model)
    assert ops(fused) == ["ConvTranspose"], ops(fused)
    assert_exact(model, fused, rtol=1e-4, atol=1e-4)


def test_transposed_conv_refuses_a_shift_before_it():
    """A shift of its input reaches each output position through other taps: no bias."""
    b = GraphBuilder(seed=23)
    x = b.input("x", [1, 4, 5, 5])
    scale, shift = _affine_consts(b, 4)
    b.output(b.rename(_conv_transpose(b, b.op("Add", [b.op("Mul", [x, scale]), shift]), 3, k=3), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Mul", "Add", "ConvTranspose"], ops(fused)
    assert any("shift before a zero-padded layer" in r for r in result.refused), result.refused


def test_transposed_conv_takes_no_pointwise_conv_before_it_and_no_skip_around_it():
    """Its rows read no fixed window of its input: nothing merges into it from before."""
    b = GraphBuilder(seed=22)
    x = b.input("x", [1, 4, 5, 5])
    h = b.conv(x, 4, k=1, bias=False)
    y = _conv_transpose(b, h, 4, k=3, stride=1, pads=[1, 1, 1, 1])
    b.output(b.rename(b.op("Add", [y, h]), "y"))
    model = b.build()
    fused, result = fuse(model)
    assert ops(fused) == ["Conv", "ConvTranspose", "Add"], ops(fused)
    assert any("no fixed window" in r for r in result.refused), result.refused
    assert_exact(model, fused, rtol=1e-4, atol=1e-4)
