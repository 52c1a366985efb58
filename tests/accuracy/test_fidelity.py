"""Output fidelity: cosine, max abs error, relative error, top-1 agreement."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from onnxprune import Pruner, fidelity, onnx_in
from onnxprune.calibration import CalibrationSet
from onnxprune.fidelity import AgreementAccumulator, measure
from support.small_models import conv_chain


def _scores(values):
    acc = AgreementAccumulator("y")
    for ref, got in values:
        acc.update(np.asarray(ref, np.float32), np.asarray(got, np.float32))
    return acc.result()


def test_identical_outputs_agree_perfectly():
    ref = np.random.default_rng(0).standard_normal((6, 10))
    result = _scores([(ref, ref)])
    assert result.cosine == pytest.approx(1.0) and result.cosine_min == pytest.approx(1.0)
    assert result.max_abs == 0.0 and result.rel_l2 == 0.0 and result.top1 == 1.0


def test_known_differences_are_measured_exactly():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    got = np.array([[0.0, 1.0], [0.0, 2.0]])  # sample 0 orthogonal + argmax flips; sample 1 scaled
    result = _scores([(ref, got)])
    assert result.cosine == pytest.approx(0.5) and result.cosine_min == pytest.approx(0.0)
    assert result.max_abs == pytest.approx(1.0)
    assert result.rel_l2 == pytest.approx(np.sqrt(3 / 2))
    assert result.top1 == pytest.approx(0.5)


def test_only_class_score_like_outputs_get_top1():
    feature_map = np.random.default_rng(0).standard_normal((2, 4, 3, 3))
    assert _scores([(feature_map, feature_map)]).top1 is None
    probs = np.full((2, 5, 4), 0.25)
    assert _scores([(probs, probs)]).top1 == 1.0
    logits_seq = np.random.default_rng(1).standard_normal((2, 5, 4))  # rows do not sum to 1
    assert _scores([(logits_seq, logits_seq)]).top1 is None


def test_zero_outputs_count_as_agreeing_only_when_both_are_zero():
    zero, one = np.zeros((1, 3)), np.ones((1, 3))
    assert _scores([(zero, zero)]).cosine == 1.0
    assert _scores([(zero, one)]).cosine == 0.0


def test_measure_runs_both_models_over_every_sample():
    graph = onnx_in.from_model(conv_chain(batch="N"))
    data = CalibrationSet({"input": np.random.default_rng(0).standard_normal((9, 3, 8, 8)).astype(np.float32)})
    same = measure(graph, graph, data, batch_size=4)
    assert same.samples == 9 and same.cosine == pytest.approx(1.0) and same.max_abs == 0.0
    params = dict(graph.params)
    gemm_w = next(n.inputs[1] for n in graph.nodes if n.op_type == "Gemm")
    params[gemm_w] = params[gemm_w] * 2
    doubled = measure(graph, dataclasses.replace(graph, params=params), data, batch_size=4)
    assert doubled.cosine < 1.0 and doubled.max_abs > 0.0 and 0 < doubled.outputs[0].rel_l2


def test_pruner_reports_fidelity_on_random_inputs_by_default():
    pruner = Pruner.from_model(conv_chain())
    assert pruner.fidelity().cosine == pytest.approx(1.0)
    pruner.prune(ratio=0.5)
    after = pruner.fidelity()
    assert after.samples == 8 and after.data == "random inputs" and after.cosine < 1.0
    assert "cosine" in after.summary() and after.to_dict()["outputs"][0]["name"] == "output"


def _ctc_probs(labels: np.ndarray, classes: int = 6) -> np.ndarray:
    probs = np.full(labels.shape + (classes,), 0.02)
    np.put_along_axis(probs, labels[..., None], 1.0 - 0.02 * (classes - 1), axis=-1)
    return probs


def test_sequences_report_agreement_off_the_background_class():
    """A recogniser that reads nothing (all blank) still agrees on most positions: the
    foreground figure says it read none of the characters."""
    rng = np.random.default_rng(0)
    labels = np.where(rng.random((4, 20)) < 0.8, 0, rng.integers(1, 6, (4, 20)))  # class 0: the blank
    reads_nothing = _scores([(_ctc_probs(labels), _ctc_probs(np.zeros_like(labels)))])
    assert reads_nothing.top1 > 0.7 and reads_nothing.top1_foreground == 0.0 and reads_nothing.background_class == 0
    wrong_half = labels.copy()
    foreground = np.argwhere(labels > 0)
    for t in foreground[: len(foreground) // 2]:
        wrong_half[tuple(t)] = 0
    half = _scores([(_ctc_probs(labels), _ctc_probs(wrong_half))])
    assert half.top1_foreground == pytest.approx((len(foreground) - len(foreground) // 2) / len(foreground))
    perfect = _scores([(_ctc_probs(labels), _ctc_probs(labels))])
    assert perfect.top1_foreground == 1.0


def test_no_background_figure_without_a_dominant_class():
    labels = np.tile(np.arange(5), (3, 4))  # every class equally often
    result = _scores([(_ctc_probs(labels), _ctc_probs(labels))])
    assert result.top1 == 1.0 and result.top1_foreground is None and result.background_class is None
    assert _scores([(np.eye(4)[:3], np.eye(4)[:3])]).top1_foreground is None  # [N, C] scores: no sequence


def test_the_original_runs_to_the_end_before_the_pruned_model_starts(monkeypatch):
    """Two onnxruntime sessions of a large model at once double the peak memory: the original's
    outputs are held and its session released first; outputs too large to hold are compared batch
    by batch with both open, with the same result."""
    graph = onnx_in.from_model(conv_chain(batch="N"))
    params = dict(graph.params)
    name = next(n for n in params if params[n].ndim == 4)
    params[name] = params[name] * 0.5
    pruned = dataclasses.replace(graph, params=params)
    data = CalibrationSet({"input": np.random.default_rng(1).standard_normal((12, 3, 8, 8)).astype(np.float32)})
    events, real_stream = [], fidelity.stream

    def traced(g, tensors, data, provider="cpu", batch_size=8, progress=None):
        who = "original" if g is graph else "pruned"
        for k, values in enumerate(real_stream(g, tensors, data, provider, batch_size, progress)):
            events.append((who, k))
            yield values
        events.append((who, "closed"))

    monkeypatch.setattr(fidelity, "stream", traced)
    held = measure(graph, pruned, data, batch_size=4)
    assert events.index(("original", "closed")) < events.index(("pruned", 0))
    events.clear()
    monkeypatch.setattr(fidelity, "HELD_REFERENCE_BYTES", 1)
    interleaved = measure(graph, pruned, data, batch_size=4)
    assert events.index(("pruned", 0)) < events.index(("original", 2))  # both open at once
    assert held == interleaved and held.outputs[0].rel_l2 > 0
