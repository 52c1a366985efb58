"""Half-precision and weight-only int8 models (issue 17): sliced in their own dtype, scored on the weights
as the layers read them (in float), no dtype changed in the output.

Models: tests/models/realworld/ (scripts/build_realworld_models.py): a CNN computed in fp16; the same in
float32 with its weights stored fp16 or bf16 behind a Cast; and with int8 weights behind Cast, Sub zero point,
Mul scale. onnxruntime's CPU provider runs no bf16 kernel, so the bf16 model stores bf16 and computes float32.
"""
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune import Pruner
from onnxprune.importance import CRITERIA
from onnxprune.scoring import ScoringContext
from support.exported import MODELS_DIR
from support.oracle import assert_group_oracle, run

REALWORLD = os.path.join(MODELS_DIR, "realworld")
STORED = {"fp16_cnn": np.float16, "fp16_cast_weights": np.float16, "bf16_cast_weights": "bfloat16",
          "int8_weight_only": np.int8}
MACS = 0.29  # at --ratio 0.5, exact widths, as measured (0.288 on each)


def _load(name):
    return onnx.load(os.path.join(REALWORLD, f"{name}.onnx"))


def _image(dtype=np.float32, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(dtype)}


def _dtypes(model):
    return {t.name: t.data_type for t in model.graph.initializer}


@pytest.mark.parametrize("name", sorted(STORED))
def test_every_group_equals_zeroing_in_the_models_own_dtype(name):
    model = _load(name)
    half = name == "fp16_cnn"
    pruner = Pruner.from_model(model)
    groups = pruner.prunable_groups()
    assert sorted(g.size for g in groups) == [8, 16]
    tolerance = 2e-2 if half else 1e-4  # fp16 arithmetic: ~1e-3 relative per op
    for group in groups:
        assert_group_oracle(pruner.depgraph, group, tuple(range(0, group.size, 2)),
                            _image(np.float16 if half else np.float32), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("name", sorted(STORED))
def test_pruning_keeps_every_dtype_and_halves_the_macs(name):
    model = _load(name)
    pruner = Pruner.from_model(model)
    macs = pruner.macs()
    pruner.prune(ratio=0.5, round_to=1)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    before, after = _dtypes(model), _dtypes(pruned)
    assert set(after) <= set(before) and all(after[k] == before[k] for k in after)
    stored = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    weight = next(stored[k] for k in ("conv1_w", "conv1_w_stored", "conv1_w_q") if k in stored)
    assert weight.dtype == np.dtype(STORED[name]) and weight.shape == (8, 3, 3, 3)
    assert [i.type.tensor_type.elem_type for i in pruned.graph.input] == \
        [i.type.tensor_type.elem_type for i in model.graph.input]
    assert [o.type.tensor_type.elem_type for o in pruned.graph.output] == \
        [o.type.tensor_type.elem_type for o in model.graph.output]
    assert {n.op_type for n in pruned.graph.node} == {n.op_type for n in model.graph.node}  # casts, Sub, Mul stay
    feeds = _image(np.float16 if name == "fp16_cnn" else np.float32)
    assert run(pruned, feeds)[0].dtype == run(model, feeds)[0].dtype
    assert pruner.macs() / macs <= MACS


def _float_twin(model):
    """The model with every weight as the float32 its conversion (Cast; Cast-Sub-Mul) computes, stored as a
    plain initializer: what the weights are as the layers read them."""
    from onnx.reference import ReferenceEvaluator
    made = {o: n for n in model.graph.node for o in n.output}
    weights = sorted({name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "BatchNormalization")
                      for name in n.input[1:] if name in made})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(w, onnx.TensorProto.FLOAT, None) for w in weights)
    values = ReferenceEvaluator(probe).run(weights, _image())
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    converting = {o for n in model.graph.node if n.op_type in ("Cast", "Sub", "Mul") for o in n.output}
    kept = [n for n in twin.graph.node if n.output[0] not in converting]
    del twin.graph.node[:]
    twin.graph.node.extend(kept)
    used = {i for n in kept for i in n.input}
    inits = [t for t in twin.graph.initializer if t.name in used]
    del twin.graph.initializer[:]
    twin.graph.initializer.extend(inits + [numpy_helper.from_array(v, w) for w, v in zip(weights, values)])
    onnx.checker.check_model(twin)
    np.testing.assert_allclose(run(twin, _image())[0], run(model, _image())[0], rtol=1e-5, atol=1e-5)
    return twin


@pytest.mark.parametrize("name", ["int8_weight_only", "fp16_cast_weights", "bf16_cast_weights"])
@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_stored_weights_are_scored_as_the_float_the_layers_read(name, criterion):
    """Channels rank by the weights as read: the raw int8 values (offset by their zero point) or the bf16
    bit patterns would rank them otherwise. The scores are those of the same model with float32 weights."""
    model = _load(name)
    scores = []
    for m in (model, _float_twin(model)):
        pruner = Pruner.from_model(m)
        ctx = ScoringContext(pruner.depgraph, np.random.default_rng(0))
        scores.append({g.size: CRITERIA[criterion](ctx, g) for g in pruner.prunable_groups()})
    assert sorted(scores[0]) == sorted(scores[1]) == [8, 16]
    for size in scores[0]:
        np.testing.assert_allclose(scores[0][size], scores[1][size], rtol=1e-6)


def test_stored_weights_count_as_parameters():
    """bf16 (an ml_dtypes type, not a numpy float) and int8 weights are parameters; shape constants are not."""
    counts = {name: Pruner.from_model(_load(name)).params() for name in STORED}
    assert counts["fp16_cnn"] == counts["fp16_cast_weights"] == counts["bf16_cast_weights"] > 3000
    model = _load("int8_weight_only")
    quantization = sum(numpy_helper.to_array(t).size for t in model.graph.initializer
                       if t.name.endswith(("_w_zero", "_w_scale")))
    assert counts["int8_weight_only"] == counts["fp16_cnn"] + quantization
