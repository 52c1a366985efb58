"""Recovery through a pruned hidden size: the scale and shift of normalizations whose statistics
pruning changed are re-fitted (passes/norms.py), where something other than re-fitted layers
reads them (a residual join)."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxprune import Pruner
from onnxprune.calibration import CalibrationSet
from onnxprune.passes.norms import changed_norms
from onnxprune.validate import check
from support.exported import by_name
from support.oracle import run

HIDDEN, KEPT = 16, 12


def _model(norm: str, opset: int, weights: dict, skip: str = "n") -> onnx.ModelProto:
    """x [N, 5, 8] -> MatMul (HIDDEN) -> h -> ``norm`` -> n; ``skip`` + MLP(n) (a residual join: post-norm
    from n, pre-norm from h) -> MatMul+Add -> output."""
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h"], name="proj"),
             helper.make_node(norm, ["h", "scale"] + (["shift"] if "shift" in weights else []), ["n"], name="norm",
                              axis=-1, epsilon=1e-12),
             helper.make_node("MatMul", ["n", "W1"], ["m1"], name="fc1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="fc1_bias"),
             helper.make_node("Relu", ["a1"], ["u"], name="act"),
             helper.make_node("MatMul", ["u", "W2"], ["m2"], name="fc2"),
             helper.make_node("Add", ["m2", "b2"], ["v"], name="fc2_bias"),
             helper.make_node("Add", [skip, "v"], ["r"], name="residual"),
             helper.make_node("MatMul", ["r", "W3"], ["m3"], name="head"),
             helper.make_node("Add", ["m3", "b3"], ["output"], name="head_bias")]
    value = lambda name, shape: helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)  # noqa: E731
    graph = helper.make_graph(nodes, "norm_residual", [value("x", ["N", 5, 8])], [value("output", ["N", 5, 4])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _weights(seed: int, shift: bool) -> dict:
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.standard_normal(shape) * 0.5  # noqa: E731
    w = {"W0": f(8, HIDDEN), "scale": 1 + 0.3 * f(HIDDEN), "W1": f(HIDDEN, 24), "b1": 0.1 * f(24),
         "W2": f(24, HIDDEN), "b2": 0.1 * f(HIDDEN), "W3": f(HIDDEN, 4), "b3": 0.1 * f(4)}
    if shift:
        w["shift"] = 0.2 * f(HIDDEN)
    return w


def _data(n: int, seed: int) -> dict:
    return {"x": np.random.default_rng(seed).standard_normal((n, 5, 8)).astype(np.float32)}


def _recovered_error(model, refit_norms: bool, **options) -> tuple[float, Pruner]:
    """Prune hidden channels KEPT.. of the model's one hidden group, recover on one data set, return
    the held-out relative error of the output on another."""
    pruner = Pruner.from_model(model)
    group = pruner.group_of("proj")
    assert group.kind == "hidden"
    pruner.prune_group(group, list(range(KEPT, HIDDEN)))
    assert list(pruner.kept["h"][2]) == list(range(KEPT))
    fit = CalibrationSet.from_arrays(_data(48, 1), pruner.original_graph.inputs)
    pruner.recover(fit, methods="lstsq", holdout=0.0, undo_if_worse=False, refit_norms=refit_norms, **options)
    held = _data(32, 2)
    reference = run(model, held)[0]
    check(pruner.to_model())
    return float(np.linalg.norm(run(pruner.to_model(), held)[0] - reference) / np.linalg.norm(reference)), pruner


@pytest.mark.parametrize("norm, opset", [("SimplifiedLayerNormalization", 17), ("RMSNormalization", 23)])
def test_rms_norm_whose_removed_channels_are_zero_is_recovered_exactly(norm, opset):
    """The removed hidden channels are zero on every input (and the MLP writes none back), so the
    pruned RMSNorm divides by sqrt(C/K) times the original's root mean square: a per-channel scale
    the residual join passes on, which no later layer's fit can undo (the MLP between is not
    linear). Re-fitting the norm's scale makes the pruned model the original's exactly."""
    weights = _weights(3, shift=False)
    weights["W0"][:, KEPT:] = 0
    weights["W2"][:, KEPT:], weights["b2"][KEPT:] = 0, 0
    model = _model(norm, opset, weights)
    without, _ = _recovered_error(model, refit_norms=False, ridge=1e-9)
    exact, pruner = _recovered_error(model, refit_norms=True, ridge=1e-9)
    assert without > 0.01, without
    assert exact < 1e-4, exact
    scale = numpy_helper.to_array(next(i for i in pruner.to_model().graph.initializer
                                       if i.name == pruner.graph.node_by_name["norm"].inputs[1]))
    np.testing.assert_allclose(scale, weights["scale"][:KEPT] * np.sqrt(HIDDEN / KEPT), rtol=1e-4)


def test_layer_norm_whose_removed_channels_copy_kept_ones_stays_exact():
    """Hidden channel j is a copy of base channel j % 4, so the kept 12 hold three copies of each
    base channel and the removed 4 one: mean and variance over the kept equal those over all, the
    norm's statistics do not change, and every removed channel is a kept one (the MLP writes only
    channels 0..3). The re-fits, the norm's toward the identity, keep the original's outputs."""
    weights = _weights(4, shift=True)
    weights["W0"] = weights["W0"][:, np.arange(HIDDEN) % 4]
    weights["scale"], weights["shift"] = weights["scale"][np.arange(HIDDEN) % 4], weights["shift"][np.arange(HIDDEN) % 4]
    weights["W2"][:, 4:], weights["b2"][4:] = 0, 0
    model = _model("LayerNormalization", 17, weights)
    for refit_norms in (False, True):
        error, pruner = _recovered_error(model, refit_norms=refit_norms, ridge=1e-9)
        assert error < 1e-4, (refit_norms, error)
    assert [n.node.name for n in changed_norms(pruner.graph, pruner.registry, pruner.edits,
                                               pruner.original_graph)] == ["norm"]


def test_a_norm_only_re_fitted_layers_read_is_left_to_their_fit():
    """Pre-norm: only the MLP's first layer reads the norm, and its re-fit absorbs any per-channel
    map of its input; the norm is not re-fitted, and the result is the one without the option."""
    weights = _weights(5, shift=True)
    model = _model("LayerNormalization", 17, weights, skip="h")
    errors = {}
    for refit_norms in (False, True):
        errors[refit_norms], pruner = _recovered_error(model, refit_norms=refit_norms)
    assert changed_norms(pruner.graph, pruner.registry, pruner.edits, pruner.original_graph) == []
    assert errors[True] == errors[False] and errors[False] > 0
