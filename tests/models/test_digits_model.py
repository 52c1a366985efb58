"""The committed digits CNN is what its README says: valid, prunable, and as accurate as recorded."""
import onnx

from onnxprune import Pruner, PruneOptions
from support import digits


def test_model_is_valid_with_batchnorm_kept_and_dynamic_batch():
    model = digits.model()
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BatchNormalization") == digits.META["batchnorm_nodes"] == 8
    assert ops.count("Add") == 3  # three residual blocks
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value


def test_splits_have_the_documented_layout():
    calib, (x, y) = digits.calib(), digits.heldout()
    assert list(calib) == [digits.INPUT]
    assert calib[digits.INPUT].shape == (digits.META["calib"]["samples"], 1, 8, 8)
    assert x.shape == (digits.META["heldout"]["samples"], 1, 8, 8) and y.shape == (x.shape[0],)
    assert calib[digits.INPUT].dtype == x.dtype == "float32" and y.dtype == "int64"
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert sorted(set(y.tolist())) == list(range(10))
    assert len(digits.calib_labels()) == len(calib[digits.INPUT])


def test_heldout_accuracy_reaches_the_recorded_one():
    accuracy = digits.accuracy(digits.model())
    assert accuracy >= 0.97
    assert accuracy >= digits.RECORDED_ACCURACY - 1.5 / digits.META["heldout"]["samples"]  # one sample of slack


def test_prunes_to_half_the_macs_and_still_runs_on_the_whole_batch():
    pruner = Pruner.from_model(digits.model())
    macs = pruner.macs()
    assert len(pruner.prunable_groups()) == 5
    pruner.prune(PruneOptions(ratio=0.3, round_to=1))  # exact widths: the MACs this ratio gives
    assert 0.4 < pruner.macs() / macs < 0.6
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    x, _ = digits.heldout()
    assert digits.predict(pruned, x).shape == (len(x),)  # the batch axis stays dynamic
