"""Recovery on a trained model (models/digits): held-out task accuracy, not just fidelity."""
import numpy as np
import onnxruntime as ort

from onnxprune import Pruner
from onnxprune.calibration import CalibrationSet
from support import digits


def test_recovery_wins_back_accuracy_at_half_the_macs():
    p = Pruner.from_model(digits.model())
    data = CalibrationSet.from_arrays(digits.calib(), p.original_graph.inputs)
    macs = p.macs()
    p.prune(ratio=0.3, round_to=1)  # L2 weight norm, exact widths (MACs x0.51)
    assert 0.45 <= p.macs() / macs <= 0.55
    pruned = digits.accuracy(p.to_model())
    result = p.recover(data)  # bias compensation, least squares, BN re-estimation
    recovered = digits.accuracy(p.to_model())
    assert result.kept
    assert pruned < 0.5  # weight norm alone loses the task at this ratio (about 0.20)
    assert recovered >= digits.RECORDED_ACCURACY - 0.02  # unpruned: 0.989; recovered: about 0.998
    assert recovered - pruned >= 0.4
    assert result.fidelity_after.top1 > result.fidelity_before.top1
    # still a valid model with the same outputs shape on the held-out inputs
    x, _ = digits.heldout()
    session = ort.InferenceSession(p.to_model().SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {digits.INPUT: x[:3]})[0].shape == (3, 10)


def test_each_recovery_method_alone_beats_no_recovery():
    """BN re-estimation and least squares each recover most of it; bias compensation some."""
    scores = {}
    for methods in ("bn", "lstsq", "bias"):
        p = Pruner.from_model(digits.model())
        data = CalibrationSet.from_arrays(digits.calib(), p.original_graph.inputs)
        p.prune(ratio=0.3, round_to=1)
        before = digits.accuracy(p.to_model())
        p.recover(data, methods=methods, max_rows=256)
        scores[methods] = digits.accuracy(p.to_model()) - before
    assert scores["bn"] > 0.5 and scores["lstsq"] > 0.5 and scores["bias"] > 0.2, scores
    assert np.isfinite(list(scores.values())).all()
