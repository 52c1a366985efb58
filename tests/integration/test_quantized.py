"""Quantized graphs as the quantizers write them (issue 17), committed by scripts/build_realworld_models.py:
QDQ per-channel conv and matmul, onnxruntime's dynamic quantization (ConvInteger, MatMulInteger,
DynamicQuantizeLinear), its static QOperator format (QLinearConv, QLinearMatMul, and com.microsoft's
QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearConcat, QLinear pools), int4 MatMulNBits and
DynamicQuantizeLSTM.

Each: every prunable group matches the zeroed-channels oracle through onnxruntime's integer kernels (removing
equals setting the channels' codes to their zero point; the integer arithmetic makes that exact, no rounding
moves), and ``--ratio 0.5`` writes a model that is still quantized (the same operators, every weight in its own
dtype), passes the full checker and runs with the original's output shapes, at the MACs measured here.
"""
import os
from collections import Counter

import numpy as np
import onnx
import pytest

from onnxprune import Pruner
from support.cli import call
from support.exported import MODELS_DIR
from support.oracle import assert_group_oracle, random_feeds, run

REALWORLD = os.path.join(MODELS_DIR, "realworld")
# prunable group sizes, and MACs at --ratio 0.5 as measured (ceilings: lower them as rules land)
MODELS = {
    "qdq_conv": ([16, 32, 16], 0.314),
    "qdq_matmul": ([128], 0.5),  # the residual stream is the graph's input and output
    "conv_integer_dynamic": ([16, 32], 0.272),
    "qlinear_conv": ([16, 32], 0.334),  # the depthwise conv's channels are the first conv's
    # the stem's 16 run through squeeze-excite, the residual QLinearAdd and QLinearConcat; the side conv's 8
    # follow the concatenation by offset
    "qlinear_contrib": ([16, 8, 8], 0.293),
    "matmul_nbits": ([8], 0.5),  # hidden 256 in blocks of 32 (down's K blocks); the residual stays
    "dynamic_quantize_lstm": ([32, 48], 0.281),
}


def _path(name):
    return os.path.join(REALWORLD, f"{name}.onnx")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_group_matches_the_zeroed_channels_oracle(name):
    model = onnx.load(_path(name))
    pruner = Pruner.from_model(model)
    groups = pruner.prunable_groups()
    assert sorted(g.size for g in groups) == sorted(MODELS[name][0])
    feeds = random_feeds(model)
    assert np.ptp(run(model, feeds)[0]) > 0  # the model is not saturated into a constant
    for group in groups:
        assert_group_oracle(pruner.depgraph, group, tuple(range(0, group.size, 2)), feeds)


def _weights(model):
    return {t.name: t.data_type for t in model.graph.initializer}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_half_ratio_keeps_a_valid_quantized_model(name, tmp_path, capfd):
    model = onnx.load(_path(name))
    out = tmp_path / "pruned.onnx"
    code, _, err = call(capfd, [_path(name), out, "--ratio", "0.5", "-q"])
    assert code == 0, err
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    assert Counter(n.op_type for n in pruned.graph.node) == Counter(n.op_type for n in model.graph.node)
    before, after = _weights(model), _weights(pruned)
    assert {k: v for k, v in after.items() if k in before} == {k: before[k] for k in after if k in before}
    feeds = random_feeds(model)
    assert [o.shape for o in run(pruned, feeds)] == [o.shape for o in run(model, feeds)]
    pruner = Pruner.from_model(model)
    macs = pruner.macs()
    pruner.prune(ratio=0.5)
    assert pruner.macs() / macs <= MODELS[name][1]


def test_int4_weights_shrink_in_whole_blocks_with_their_packed_zero_points():
    pruned = Pruner.from_model(onnx.load(_path("matmul_nbits")))
    pruned.prune(ratio=0.5)
    model = pruned.to_model()
    nodes = {n.name: n for n in model.graph.node}
    attrs = {name: {a.name: a.i for a in nodes[name].attribute} for name in ("gate", "up", "down")}
    assert attrs["gate"]["N"] == attrs["up"]["N"] == attrs["down"]["K"] == 128  # 4 of 8 blocks of 32
    inits = {t.name: t for t in model.graph.initializer}
    down = nodes["down"]
    assert list(inits[down.input[1]].dims) == [64, 4, 16]  # 64 columns, 4 blocks, 16 bytes of nibbles each
    assert list(inits[down.input[2]].dims) == [64 * 4] and list(inits[down.input[3]].dims) == [64 * 2]
