"""Recovery passes (bias compensation, least squares, BN re-estimation): each proved numerically."""
import numpy as np
import onnx
import pytest

from onnxprune import Pruner, onnx_out
from onnxprune.activations import stream
from onnxprune.calibration import CalibrationSet
from onnxprune.validate import check
from support.architectures import ARCHITECTURES
from support.builder import GraphBuilder
from support.oracle import run


def _data(model, n=48, seed=0, shape=(3, 8, 8)):
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((n,) + shape).astype(np.float32)}


def _pruner(model, arrays):
    p = Pruner.from_model(model)
    return p, CalibrationSet.from_arrays(arrays, p.original_graph.inputs)


def _outputs(model, arrays):
    return run(model, arrays)[0]


def _combination_model(consumer: str):
    """Conv_0 (6 channels, no nonlinearity after it): channels 3..5 are linear combinations
    of channels 0..2, weights and biases alike; then a consumer that reads all six."""
    b = GraphBuilder(seed=4)
    x = b.input("input", ["N", 3, 8, 8])
    rng = np.random.default_rng(5)
    base_w, base_b = rng.standard_normal((3, 3, 3, 3)), rng.standard_normal(3)
    mix = rng.standard_normal((3, 3))
    w = np.concatenate([base_w, np.einsum("ij,jklm->iklm", mix, base_w)]).astype(np.float32)
    bias = np.concatenate([base_b, mix @ base_b]).astype(np.float32)
    y = b.op("Conv", [x, b.param(w), b.param(bias)], kernel_shape=[3, 3], pads=[1] * 4)
    if consumer == "conv":
        out = b.conv(y, 5)
    elif consumer == "grouped":  # combinations stay inside each group: 3 groups of (c, c+3)... use 1x1 groups=2
        out = b.op("Conv", [y, b.param((4, 3, 3, 3)), b.param((4,))], kernel_shape=[3, 3], pads=[1] * 4, group=2)
    elif consumer == "transpose":  # an upsampling head: kernel 2, stride 2 (each output reads one tap)
        out = b.op("ConvTranspose", [y, b.param((6, 4, 2, 2)), b.param((4,))], kernel_shape=[2, 2], strides=[2, 2])
    elif consumer == "transpose_overlap":  # taps overlap, padding trims the borders
        out = b.op("ConvTranspose", [y, b.param((6, 4, 3, 3))], kernel_shape=[3, 3], strides=[2, 2],
                   pads=[1, 1, 1, 1], output_padding=[1, 1])
    else:
        out = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1), 7)
    b.output(b.rename(out, "output"))
    return b.build()


@pytest.mark.parametrize("consumer", ["conv", "gemm", "transpose", "transpose_overlap"])
def test_least_squares_restores_outputs_when_removed_channels_are_combinations_of_kept_ones(consumer):
    model = _combination_model(consumer)
    arrays = _data(model)
    p, data = _pruner(model, arrays)
    p.prune_group(p.group_of("Conv_0"), [3, 4, 5])
    expected = _outputs(model, arrays)
    pruned = _outputs(p.to_model(), arrays)
    assert not np.allclose(pruned, expected, rtol=1e-2, atol=1e-2)  # pruning alone changes the outputs
    result = p.recover(data, methods="lstsq", ridge=1e-9)
    assert result.kept and result.passes[0]["changed"] == 1
    np.testing.assert_allclose(_outputs(p.to_model(), arrays), expected, rtol=1e-3, atol=1e-3)
    assert result.fidelity_after.outputs[0].rel_l2 < 1e-4 < result.fidelity_before.outputs[0].rel_l2


def test_least_squares_fits_each_group_of_a_grouped_conv():
    """Group 0 of a group=2 consumer reads channels 0..2, group 1 reads 3..5: channel 1 is
    0.5*ch0 + 2*ch2 (same group), so removing it (and its twin 4) is exactly recoverable."""
    b = GraphBuilder(seed=6)
    x = b.input("input", ["N", 3, 8, 8])
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w[1], w[4] = 0.5 * w[0] + 2 * w[2], -w[3] + w[5]
    y = b.op("Conv", [x, b.param(w)], kernel_shape=[3, 3], pads=[1] * 4)
    out = b.op("Conv", [y, b.param((4, 3, 3, 3)), b.param((4,))], kernel_shape=[3, 3], pads=[1] * 4, group=2)
    b.output(b.rename(out, "output"))
    model = b.build()
    arrays = _data(model)
    p, data = _pruner(model, arrays)
    group = p.group_of("Conv_0")
    assert group.size == 3  # the grouped consumer ties channel k to channel k+3
    p.prune_group(group, [1])
    p.recover(data, methods="lstsq", ridge=1e-9)
    np.testing.assert_allclose(_outputs(p.to_model(), arrays), _outputs(model, arrays), rtol=1e-3, atol=1e-3)


def _bn_model():
    """Conv_0 -> Relu -> Conv_1 -> BN_0 -> Relu -> Conv_2 -> BN_1 -> output."""
    b = GraphBuilder(seed=8)
    x = b.input("input", ["N", 3, 8, 8])
    y = b.relu(b.conv(x, 8))
    y = b.relu(b.bn(b.conv(y, 6)))
    b.output(b.rename(b.bn(b.conv(y, 5)), "output"))
    return b.build()


def test_bn_re_estimation_matches_numpy_statistics_front_to_back():
    model = _bn_model()
    arrays = _data(model, n=40)
    p, data = _pruner(model, arrays)
    p.prune_group(p.group_of("Conv_0"), [0, 2, 5])
    result = p.recover(data, methods="bn", holdout=0.0, undo_if_worse=False)
    assert result.passes[0]["changed"] == 2
    graph = p.graph
    bns = [n for n in graph.nodes if n.op_type == "BatchNormalization"]
    # the final model's BN inputs: BN_1's input depends on BN_0's new statistics
    values = {n.inputs[0]: [] for n in bns}
    for batch in stream(graph, list(values), data, batch_size=7):
        for name in values:
            values[name].append(batch[name])
    for node in bns:
        x = np.concatenate(values[node.inputs[0]]).astype(np.float64)
        np.testing.assert_allclose(graph.params[node.inputs[3]], x.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(graph.params[node.inputs[4]], x.var(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_bn_re_estimation_leaves_normalizations_whose_inputs_pruning_only_sliced():
    model = _bn_model()
    arrays = _data(model, n=16)
    p, data = _pruner(model, arrays)
    p.prune_group(p.group_of("Conv_1"), [1])  # BN_0 loses a channel; its other channels keep their values
    before = dict(p.graph.params)
    result = p.recover(data, methods="bn", holdout=0.0, undo_if_worse=False)
    bn0, bn1 = [n for n in p.graph.nodes if n.op_type == "BatchNormalization"]
    assert result.passes[0]["changed"] == 1
    for slot in (3, 4):
        np.testing.assert_array_equal(p.graph.params[bn0.inputs[slot]], before[bn0.inputs[slot]])
    # BN_1 reads Conv_2, which lost input channel 1: its statistics were re-estimated
    assert not np.allclose(before[bn1.inputs[3]], p.graph.params[bn1.inputs[3]])


def test_normalizations_after_a_refitted_layer_keep_their_trained_statistics():
    """Conv_0's removed channels are combinations of kept ones, so least squares restores
    Conv_1's outputs exactly; the BatchNorm reading them must keep its trained statistics
    (re-measuring them on the calibration data, which is not the training data, would move
    the outputs away from the original's)."""
    b = GraphBuilder(seed=4)
    x = b.input("input", ["N", 3, 8, 8])
    rng = np.random.default_rng(5)
    base_w = rng.standard_normal((3, 3, 3, 3))
    mix = rng.standard_normal((3, 3))
    w = np.concatenate([base_w, np.einsum("ij,jklm->iklm", mix, base_w)]).astype(np.float32)
    y = b.op("Conv", [x, b.param(w)], kernel_shape=[3, 3], pads=[1] * 4)
    bn = b.bn(b.conv(y, 5))
    b.output(b.rename(bn, "output"))
    model = b.build()
    arrays = _data(model)
    p, data = _pruner(model, arrays)
    p.prune_group(p.group_of("Conv_0"), [3, 4, 5])
    bn_node = next(n for n in p.graph.nodes if n.op_type == "BatchNormalization")
    trained = {slot: p.graph.params[bn_node.inputs[slot]].copy() for slot in (3, 4)}
    result = p.recover(data, methods="lstsq,bn", ridge=1e-9)
    names = {x["name"]: x for x in result.passes}
    assert names["least-squares refit"]["changed"] == 1 and names["BN re-estimation"]["changed"] == 0
    bn_node = next(n for n in p.graph.nodes if n.op_type == "BatchNormalization")
    for slot, value in trained.items():
        np.testing.assert_array_equal(p.graph.params[bn_node.inputs[slot]], value)
    np.testing.assert_allclose(_outputs(p.to_model(), arrays), _outputs(model, arrays), rtol=1e-3, atol=1e-3)


def test_bias_compensation_moves_a_constant_channel_exactly():
    """Channel 2 of Conv_0 has zero weights and bias 3: after Relu it is the constant 3.
    Removing it and compensating the consumer (1x1 conv, Gemm) leaves the outputs unchanged."""
    b = GraphBuilder(seed=9)
    x = b.input("input", ["N", 3, 8, 8])
    rng = np.random.default_rng(10)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w[2] = 0.0
    bias = rng.standard_normal(6).astype(np.float32)
    bias[2] = 3.0
    y = b.relu(b.op("Conv", [x, b.param(w), b.param(bias)], kernel_shape=[3, 3], pads=[1] * 4))
    a = b.conv(y, 4, k=1, pad=0, bias=False)  # no bias: compensation adds one
    g = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1), 5)
    b.output([b.rename(a, "conv_out"), b.rename(g, "gemm_out")])
    model = b.build()
    arrays = _data(model, n=16)
    p, data = _pruner(model, arrays)
    p.prune_group(p.group_of("Conv_0"), [2])
    expected = run(model, arrays)
    assert not np.allclose(run(p.to_model(), arrays)[0], expected[0], atol=1e-2)
    result = p.recover(data, methods="bias")
    assert result.passes[0]["changed"] == 2
    for got, want in zip(run(p.to_model(), arrays), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    consumer = p.graph.node_by_name["Conv_1"]
    assert len(consumer.inputs) == 3 and consumer.inputs[2] in p.graph.params


def test_matmul_layers_are_refitted_without_an_intercept():
    b = GraphBuilder(seed=11)
    x = b.input("input", ["N", 4, 6])
    h = b.op("MatMul", [x, b.param((6, 8))])
    b.output(b.rename(b.op("MatMul", [b.relu(h), b.param((8, 5))]), "output"))
    model = b.build()
    arrays = _data(model, n=32, shape=(4, 6))
    p, data = _pruner(model, arrays)
    p.prune_group(p.group_of("MatMul_0"), [1, 6])
    result = p.recover(data)
    names = {x["name"]: x for x in result.passes}
    assert names["least-squares refit"]["changed"] == 1
    assert any("no bias" in note for note in names["least-squares refit"]["notes"])
    assert names["bias compensation"]["changed"] == 0  # least squares re-fits the layer whole
    assert worse_or_equal(result) and result.kept
    p, data = _pruner(model, arrays)
    p.prune_group(p.group_of("MatMul_0"), [1, 6])
    assert any("no bias" in note for note in p.recover(data, methods="bias").passes[0]["notes"])


def worse_or_equal(result):
    return result.fidelity_after.outputs[0].rel_l2 <= result.fidelity_before.outputs[0].rel_l2 + 1e-12


@pytest.mark.parametrize("name", ["mobilenetv2", "resnext", "inception"])
def test_recovery_never_makes_a_model_invalid(name):
    model = ARCHITECTURES[name]()
    p = Pruner.from_model(model)
    arrays = {v.name: np.random.default_rng(0).standard_normal((6,) + tuple(v.shape[1:])).astype(np.float32)
              for v in p.original_graph.inputs}
    data = CalibrationSet.from_arrays(arrays, p.original_graph.inputs)
    p.prune(ratio=0.5)
    result = p.recover(data)
    recovered = p.to_model()
    check(recovered)
    feeds = {k: v[:1] for k, v in arrays.items()}
    shapes = [o.shape for o in run(recovered, feeds)]
    assert shapes == [o.shape for o in run(model, feeds)]
    assert all(np.isfinite(o).all() for o in run(recovered, feeds))
    assert worse_or_equal(result) or not result.kept


def test_a_recovery_that_hurts_is_not_applied(monkeypatch):
    """If held-out fidelity gets worse, the unrecovered model stays (and the result says so)."""
    from onnxprune.passes import PassResult
    from onnxprune.passes.lstsq import LeastSquaresRefit

    def sabotage(self, graph):
        params = {k: (v * -3.0 if v.dtype.kind == "f" and v.ndim == 4 else v) for k, v in graph.params.items()}
        import dataclasses
        return PassResult(self.name, dataclasses.replace(graph, params=params), 1)

    monkeypatch.setattr(LeastSquaresRefit, "run", sabotage)
    model = _bn_model()
    arrays = _data(model, n=16)
    p, data = _pruner(model, arrays)
    p.prune_group(p.group_of("Conv_0"), [0, 2, 5])
    before = _outputs(p.to_model(), arrays)
    result = p.recover(data, methods="lstsq")
    assert not result.kept
    np.testing.assert_array_equal(_outputs(p.to_model(), arrays), before)
    assert "NOT applied" in result.summary()[0]


def test_original_channels_are_tracked_through_two_prunes():
    model = _bn_model()
    p = Pruner.from_model(model)
    conv0_out = p.graph.node_by_name["Conv_0"].outputs[0]
    p.prune_group(p.group_of("Conv_0"), [0, 2, 5])
    p.prune_group(p.group_of("Conv_0"), [1])  # of the remaining [1, 3, 4, 6, 7]: original 3
    np.testing.assert_array_equal(p.kept[conv0_out][1], [1, 4, 6, 7])
    assert onnx_out.to_model(p.graph) is not None and isinstance(p.to_model(), onnx.ModelProto)


def _attention_mlp_model():
    """One Transformer block written as exporters do (MatMul + bias Add, run-time Reshape targets),
    hidden 16 = 4 heads of 4, MLP width 12. Head 3 is a copy of head 1 (Q, K, V columns and
    biases), so its context equals head 1's; MLP channels 8..11 are linear combinations of
    channels 0..7 (weights and biases; no activation between the two MLP layers)."""
    from support.transformers import _dim
    b = GraphBuilder(seed=12)
    rng = np.random.default_rng(13)
    x = b.input("input", ["N", "T", 16])

    def linear(t, w, bias):
        return b.op("Add", [b.op("MatMul", [t, b.param(w.astype(np.float32))]), b.param(bias.astype(np.float32))])

    def heads_copy(w):
        w[..., 12:16] = w[..., 4:8]
        return w

    split = lambda t: b.op("Concat", [_dim(b, t, 0), _dim(b, t, 1), b.const(np.asarray([4, 4], np.int64))],  # noqa: E731
                           axis=0)
    q, k, v = (linear(x, heads_copy(rng.standard_normal((16, 16)) * 0.4), heads_copy(rng.standard_normal(16) * 0.1))
               for _ in range(3))
    q = b.op("Transpose", [b.op("Reshape", [q, split(q)])], perm=[0, 2, 1, 3])
    k = b.op("Transpose", [b.op("Reshape", [k, split(k)])], perm=[0, 2, 3, 1])
    v = b.op("Transpose", [b.op("Reshape", [v, split(v)])], perm=[0, 2, 1, 3])
    context = b.op("Transpose", [b.op("MatMul", [b.op("Softmax", [b.op("MatMul", [q, k])], axis=-1), v])],
                   perm=[0, 2, 1, 3])
    merged = b.op("Reshape", [context, b.op("Concat", [_dim(b, context, 0), _dim(b, context, 1),
                                                       b.const(np.asarray([16], np.int64))], axis=0)])
    h = b.op("Add", [x, linear(merged, rng.standard_normal((16, 16)) * 0.3, rng.standard_normal(16) * 0.1)])
    w1, b1, mix = rng.standard_normal((16, 8)) * 0.3, rng.standard_normal(8) * 0.1, rng.standard_normal((8, 4))
    up = linear(h, np.concatenate([w1, w1 @ mix], axis=1), np.concatenate([b1, b1 @ mix]))
    down = linear(up, rng.standard_normal((12, 16)) * 0.3, rng.standard_normal(16) * 0.1)
    b.output(b.rename(b.op("Add", [h, down]), "output"))
    return b.build()


@pytest.mark.parametrize("options, changed", [(dict(refit_shifted=False), 2), (dict(passes=0), 3), (dict(passes=3), 3),
                                              (dict(passes=2), 2), (dict(), 3)])
def test_least_squares_restores_a_transformer_block_when_removed_heads_and_mlp_channels_are_redundant(options, changed):
    """Removing a duplicated head and MLP channels that are combinations of kept ones loses nothing
    the output projection and the MLP's down projection (MatMul + bias Add) cannot re-fit; the
    MLP's up projection, reading the shifted residual stream, is re-fitted too where its level is
    fitted on the pruned model's inputs (every level with passes=0, the default; the last two with passes=3)."""
    model = _attention_mlp_model()
    arrays = _data(model, n=24, shape=(5, 16))
    p, data = _pruner(model, arrays)
    heads = [g for g in p.prunable_groups() if g.kind == "heads"]
    mlp = [g for g in p.prunable_groups() if g.kind == "channels" and g.size == 12]
    assert [g.size for g in heads] == [4] and len(mlp) == 1
    p.prune_group(heads[0], [3])
    p.prune_group(p.group_of(mlp[0].root.node), [8, 9, 10, 11])
    expected = _outputs(model, arrays)
    assert not np.allclose(_outputs(p.to_model(), arrays), expected, rtol=1e-2, atol=1e-2)
    result = p.recover(data, methods="lstsq", ridge=1e-10, **options)
    assert result.kept and result.passes[0]["changed"] == changed and not result.passes[0]["notes"]
    np.testing.assert_allclose(_outputs(p.to_model(), arrays), expected, rtol=1e-3, atol=1e-3)
    check(p.to_model())  # the fitted biases went into the Adds' constants, as vectors
    assert all(p.graph.params[n.inputs[1]].ndim == 1 for n in p.graph.nodes
               if n.op_type == "Add" and n.inputs[1] in p.graph.params)


def _upsampling_head():
    """A text detector's head in small: two strided convs down, two kernel-2 stride-2
    transposed convs back up, a sigmoid map (DB's probability map)."""
    b = GraphBuilder(seed=31)
    x = b.input("input", ["N", 3, 16, 16])
    h = b.relu(b.conv(x, 16, k=3, stride=2))
    h = b.relu(b.conv(h, 16, k=3))
    h = b.relu(b.op("ConvTranspose", [h, b.param((16, 8, 2, 2), scale=0.3), b.param((8,), scale=0.1)],
                    kernel_shape=[2, 2], strides=[2, 2]))
    y = b.op("ConvTranspose", [h, b.param((8, 1, 2, 2), scale=0.5), b.param((1,), scale=0.1)],
             kernel_shape=[2, 2], strides=[2, 2])
    b.output(b.rename(b.op("Sigmoid", [y]), "output"))
    return b.build()


def test_refitting_transposed_convs_leaves_held_out_outputs_no_worse(monkeypatch):
    """Least squares now re-fits the head's transposed convs too; on held-out inputs the map is
    closer to the original's than when they are left as they were."""
    from onnxprune.passes.lstsq import LeastSquaresRefit
    model = _upsampling_head()
    arrays, held = _data(model, n=64, shape=(3, 16, 16)), _data(model, n=32, seed=9, shape=(3, 16, 16))
    expected = _outputs(model, held)
    errors, changed = {}, {}
    for fit_transposed in (True, False):
        if not fit_transposed:
            every = LeastSquaresRefit.targets
            monkeypatch.setattr(LeastSquaresRefit, "targets", lambda self, graph: [
                n for n in every(self, graph) if graph.node_by_name[n].op_type != "ConvTranspose"])
        p, data = _pruner(model, arrays)
        p.prune(ratio=0.5)
        result = p.recover(data, methods="lstsq", holdout=0.0, undo_if_worse=False)
        changed[fit_transposed] = result.passes[0]["changed"]
        got = _outputs(p.to_model(), held)
        errors[fit_transposed] = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert changed[True] == changed[False] + 2  # both transposed convs lost input channels
    assert errors[True] <= errors[False], errors
