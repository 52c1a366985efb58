"""Recovery's statistics: accumulators that merge by summation, fits from one pass, row weights."""
import dataclasses

import numpy as np
import pytest

from onnxprune import Pruner
from onnxprune.calibration import CalibrationSet
from onnxprune.options import RecoveryOptions, RowWeighting
from onnxprune.passes.lstsq import LeastSquaresRefit
from onnxprune.passes.weights import RowWeights, layer_rows, mask_inputs
from support.architectures import ARCHITECTURES
from support.builder import GraphBuilder
from support.masked_tokens import masked_data, masked_model, token_mlp
from support.oracle import run


def _shards(data: CalibrationSet, cut: int):
    return (CalibrationSet({k: v[:cut] for k, v in data.arrays.items()}),
            CalibrationSet({k: v[cut:] for k, v in data.arrays.items()}))


@pytest.mark.parametrize("name", ["resnet_basic", "vgg_flatten_gemm"])
@pytest.mark.parametrize("original_inputs", [False, True])
def test_statistics_of_shards_sum_to_those_of_one_pass(name, original_inputs):
    """Fitting on two shards and summing the accumulators gives the weights of one pass."""
    p = Pruner.from_model(ARCHITECTURES[name]())
    p.prune(ratio=0.5, round_to=1)
    data = p.random_inputs(12, seed=3)
    options = RecoveryOptions(max_rows=10 ** 9, batch_size=4)  # every row: no sampling to differ
    refit = LeastSquaresRefit(p.original_graph, data, p.edits, p.registry, options)
    names = refit.targets(p.graph)
    assert names

    def measured(part):
        fresh = [refit.normal(p.graph, n, original_inputs) for n in names]
        return refit.measure(p.graph, fresh, part, np.random.default_rng(0))

    whole = measured(data)
    first, second = (measured(part) for part in _shards(data, 5))
    for one, a, b in zip(whole, first, second):
        merged = a.merge(b)
        assert merged.rows == one.rows
        m1, b1 = one.solve(1e-3)
        m2, b2 = merged.solve(1e-3)
        np.testing.assert_allclose(m2, m1, rtol=1e-6, atol=1e-8)
        if b1 is not None:
            np.testing.assert_allclose(b2, b1, rtol=1e-6, atol=1e-8)


def _error(pruner, model, arrays):
    return float(np.linalg.norm(run(pruner.to_model(), arrays)[0] - run(model, arrays)[0]))


def test_a_mask_input_weights_the_fit_toward_real_tokens():
    model = masked_model()
    fit, held = masked_data(40, 1), masked_data(40, 2)
    errors = {}
    for mode in RowWeighting:
        p = Pruner.from_model(model)
        assert mask_inputs(p.original_graph) == ["attention_mask"]
        group = next(g for g in p.prunable_groups() if g.size == 12)
        p.prune_group(group, list(range(6)))
        p.recover(CalibrationSet.from_arrays(fit, p.original_graph.inputs), methods="lstsq", weighting=mode,
                  background_weight=0.0, holdout=0.0)
        errors[mode] = _error(p, model, held)
    assert errors[RowWeighting.AUTO] < 0.9 * errors[RowWeighting.NONE]


def _ctc_model():
    """Per-position class probabilities [N, T, 6] where class 0 (the blank) wins most positions."""
    b = GraphBuilder(seed=31)
    x = b.input("input", ["N", "T", 8])
    logits, _ = token_mlp(b, x, np.random.default_rng(32))
    shift = np.zeros(6, np.float32)
    shift[0] = 2.5
    b.output(b.rename(b.op("Softmax", [b.op("Add", [logits, b.const(shift)])], axis=-1), "output"))
    return b.build()


def _foreground_error(pruner, model, arrays):
    """Error on the positions the original model reads as a character (arg-max not the blank)."""
    ref, got = run(model, arrays)[0], run(pruner.to_model(), arrays)[0]
    fore = ref.argmax(-1) != 0
    assert 0.05 < fore.mean() < 0.5
    return float(np.linalg.norm((got - ref)[fore])), float(np.linalg.norm((got - ref)[~fore]))


def test_blank_dominated_sequence_outputs_weight_the_fit_toward_characters():
    model = _ctc_model()
    rng = np.random.default_rng(3)
    fit = {"input": rng.standard_normal((40, 10, 8)).astype(np.float32)}
    held = {"input": rng.standard_normal((40, 10, 8)).astype(np.float32)}
    errors = {}
    for mode in RowWeighting:
        p = Pruner.from_model(model)
        group = next(g for g in p.prunable_groups() if g.size == 12)
        p.prune_group(group, list(range(6)))
        p.recover(CalibrationSet.from_arrays(fit, p.original_graph.inputs), methods="lstsq", weighting=mode,
                  holdout=0.0, undo_if_worse=False)
        errors[mode] = _foreground_error(p, model, held)
    (fore_w, back_w), (fore_u, back_u) = errors[RowWeighting.AUTO], errors[RowWeighting.NONE]
    assert fore_w < fore_u and back_w > back_u  # characters fitted better, at the blanks' expense


def test_row_weights_follow_positions_along_a_layers_last_spatial_axis():
    positions = np.asarray([[1.0, 0.0], [0.5, 1.0]])  # 2 samples, 2 positions
    # a convolution's output [N, C, H=1, W=4]: rows (n, h, w), w resampled to the 2 positions
    np.testing.assert_array_equal(layer_rows(positions, (2, 3, 1, 4), 1), [1, 1, 0, 0, .5, .5, 1, 1])
    # tokens [N, T, C]: one row per token
    np.testing.assert_array_equal(layer_rows(positions, (2, 2, 5), -1), [1, 0, .5, 1])
    # flattened [N*T, C]
    np.testing.assert_array_equal(layer_rows(positions, (4, 5), 1), [1, 0, .5, 1])
    assert layer_rows(None, (4, 5), 1) is None and layer_rows(positions, (3, 5), 1) is None


def test_weighting_off_or_without_mask_and_sequence_is_inactive():
    p = Pruner.from_model(ARCHITECTURES["plain_cnn"]())
    assert not RowWeights(p.original_graph, RecoveryOptions()).active
    masked = Pruner.from_model(masked_model()).original_graph
    assert RowWeights(masked, RecoveryOptions()).active
    assert not RowWeights(masked, dataclasses.replace(RecoveryOptions(), weighting="none")).active


@pytest.mark.parametrize("name", ["plain_cnn", "resnet_basic"])
@pytest.mark.parametrize("passes", [0, 3])
def test_refitting_shifted_layers_is_no_worse_on_held_out_data(name, passes):
    """Only the first group pruned: the layers after the one that lost channels keep theirs but
    read shifted values. Re-fitted too, held-out outputs are at least as close to the original's
    as without (on data the fit did not see)."""
    errors = {}
    for shifted in (False, True):
        p = Pruner.from_model(ARCHITECTURES[name]())
        group = p.prunable_groups()[0]
        p.prune_group(group, list(range(group.size // 2)))
        data = p.random_inputs(40, seed=5)
        result = p.recover(data, methods="lstsq", passes=passes, refit_shifted=shifted, undo_if_worse=False)
        errors[shifted] = (result.fidelity_after.outputs[0].rel_l2, result.passes[0]["changed"])
    assert errors[True][1] > errors[False][1]  # more layers were fitted
    assert errors[True][0] <= errors[False][0] * 1.001
