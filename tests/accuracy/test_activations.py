"""Streaming intermediate tensors: exposed as extra outputs, reduced batch by batch."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from onnxprune import onnx_in
from onnxprune.activations import ChannelStats, batch_size_for, channel_stats, expose, stream
from onnxprune.calibration import CalibrationSet
from support.oracle import run
from support.small_models import conv_chain


def _graph(batch="N"):
    return onnx_in.from_model(conv_chain(batch=batch))


def _data(graph, n, seed=0):
    rng = np.random.default_rng(seed)
    return CalibrationSet({"input": rng.standard_normal((n, 3, 8, 8)).astype(np.float32)})


def test_exposed_tensors_equal_a_full_run_of_the_original():
    graph = _graph()
    relu = next(n.outputs[0] for n in graph.nodes if n.op_type == "Relu")
    data = _data(graph, 5)
    batches = list(stream(graph, [relu, "input"], data, batch_size=2))
    assert [len(b[relu]) for b in batches] == [2, 2, 1]
    got = np.concatenate([b[relu] for b in batches])
    assert np.array_equal(np.concatenate([b["input"] for b in batches]), data.arrays["input"])
    # reference: the same tensor as a real output, one sample at a time
    from onnxprune import onnx_out
    model = onnx_out.to_model(expose(graph, [relu]))
    ref = np.concatenate([run(model, {"input": data.arrays["input"][i:i + 1]})[1] for i in range(5)])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert [v.name for v in expose(graph, [relu]).outputs] == ["output", relu]
    assert [v.name for v in graph.outputs] == ["output"]  # the input graph is untouched


def test_a_static_batch_dim_fixes_the_batch_size():
    assert batch_size_for(_graph(batch=1), 16) == 1
    assert batch_size_for(_graph(), 16) == 16
    static = _graph(batch=1)
    assert sum(1 for _ in stream(static, [], _data(static, 3), batch_size=16)) == 3


def test_unknown_tensors_are_refused():
    with pytest.raises(Exception, match="not produced"):
        expose(_graph(), ["no_such_tensor"])


def test_channel_stats_match_numpy_on_the_same_data():
    rng = np.random.default_rng(0)
    values = [rng.standard_normal((4, 3, 5)) for _ in range(3)]
    values[1][:, 2] = 0.0
    acc = ChannelStats(axis=1)
    for v in values:
        acc.update(v)
    whole = np.moveaxis(np.concatenate(values), 1, 0).reshape(3, -1)
    np.testing.assert_allclose(acc.mean, whole.mean(axis=1))
    np.testing.assert_allclose(acc.mean_abs, np.abs(whole).mean(axis=1))
    np.testing.assert_allclose(acc.second_moment, np.square(whole).mean(axis=1))
    np.testing.assert_allclose(acc.variance, whole.var(axis=1))
    np.testing.assert_allclose(acc.zero_fraction, (whole == 0).mean(axis=1))
    with pytest.raises(ValueError):
        _ = ChannelStats(0).mean


def test_collecting_every_layer_over_many_samples_keeps_no_batch_alive(monkeypatch):
    """Statistics over 512 samples of every activation: each batch's values are dropped
    before the next is reduced (weak references to every reduced array are dead by then)."""
    graph = _graph()
    tensors = {n.outputs[0]: 1 for n in graph.nodes if n.op_type in ("Conv", "Relu", "BatchNormalization")}
    seen: list[list[weakref.ref]] = []
    alive_at_update: list[int] = []
    original_update = ChannelStats.update

    def update(self, value):
        if not seen or len(seen[-1]) == len(tensors):
            gc.collect()
            alive_at_update.append(sum(r() is not None for batch in seen for r in batch))
            seen.append([])
        seen[-1].append(weakref.ref(value))
        original_update(self, value)

    monkeypatch.setattr(ChannelStats, "update", update)
    stats = channel_stats(graph, tensors, _data(graph, 512), batch_size=16)
    assert len(seen) == 32 and all(s.count == 512 * 64 for s in stats.values())  # 8x8 positions per sample
    assert max(alive_at_update) <= len(tensors)  # at most the previous batch, never all 32
