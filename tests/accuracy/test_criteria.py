"""Data-driven criteria: each ranks a planted case correctly, statistics come from one
streaming pass for all groups, and they refuse to run without calibration data."""
from __future__ import annotations

import numpy as np
import pytest

from onnxprune import onnx_in, scoring
from onnxprune.calibration import CalibrationSet
from onnxprune.depgraph import DependencyGraph
from onnxprune.errors import PlanError
from onnxprune.importance import CRITERIA, contractions, read_ends
from onnxprune.plan import make_plan
from onnxprune.scoring import ScoringContext
from support.small_models import conv_chain, residual

SILENT, MUTED, DEAD = 2, 5, 6  # Conv_0 channels: reads a silent input / read by zero weights / dead ReLU
QUIET_INPUT = 2  # the input channel the calibration data leaves at zero


def planted():
    """conv_chain without BN, edited so that, on data whose input channel QUIET_INPUT is 0:

    - Conv_0 channel SILENT has the largest weights but reads only that input channel
      (its activation is exactly zero on the data, not on random inputs);
    - channel MUTED is active, but Conv_1's weights reading it are zero;
    - channel DEAD is a dead ReLU: large weights, a bias far below zero.
    """
    graph = onnx_in.from_model(conv_chain(bn=False))
    conv0, conv1 = graph.node_by_name["Conv_0"], graph.node_by_name["Conv_1"]
    w0, b0, w1 = (graph.params[conv0.inputs[1]].copy(), graph.params[conv0.inputs[2]].copy(),
                  graph.params[conv1.inputs[1]].copy())
    w0[SILENT] = 0.0
    w0[SILENT, QUIET_INPUT] = 5.0
    b0[SILENT] = 0.0
    w0[DEAD] *= 3.0
    b0[DEAD] = -1000.0
    w1[:, MUTED] = 0.0
    graph.params.update({conv0.inputs[1]: w0, conv0.inputs[2]: b0, conv1.inputs[1]: w1})
    return DependencyGraph(graph)


def calib(n=24, seed=0, quiet=True):
    x = np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)
    if quiet:
        x[:, QUIET_INPUT] = 0.0
    return CalibrationSet({"input": x})


def scores(dg, criterion, data, node="Conv_0"):
    return CRITERIA[criterion](ScoringContext(dg, data=data), dg.group_of(node))


def test_readers_are_found_without_operator_names():
    dg = planted()
    group = dg.group_of("Conv_0")
    (reader,) = contractions(dg, group)
    assert reader.node == "Conv_1" and reader.data.tensor == dg.graph.node_by_name["Relu_0"].outputs[0]
    assert [w.tensor for w in reader.weights] == [dg.graph.node_by_name["Conv_1"].inputs[1]]
    assert [e.tensor for e in read_ends(dg, group)] == [reader.data.tensor]


def test_activation_ranks_zero_activations_first_where_weights_would_keep_them():
    dg = planted()
    s = scores(dg, "activation", calib())
    assert s[SILENT] == 0.0 and s[DEAD] == 0.0
    assert set(np.argsort(s, kind="stable")[:2]) == {SILENT, DEAD}
    assert s[MUTED] > 0  # active: activation does not look at the readers' weights
    l2 = scores(dg, "l2", None)
    assert l2[SILENT] > np.median(l2) and l2[DEAD] == l2.max()  # weight norms keep both


def test_output_ranks_channels_nobody_reads_first():
    dg = planted()
    s = scores(dg, "output", calib())
    assert s[MUTED] == 0.0 and s[SILENT] == 0.0 and s[DEAD] == 0.0
    assert set(np.argsort(s, kind="stable")[:3]) == {SILENT, MUTED, DEAD}
    assert np.all(np.delete(s, [SILENT, MUTED, DEAD]) > 0)


def test_output_is_second_moment_times_reader_weight_energy():
    dg = planted()
    data = calib()
    ctx = ScoringContext(dg, data=data)
    group = dg.group_of("Conv_0")
    relu = dg.graph.node_by_name["Relu_0"].outputs[0]
    x = np.concatenate([v[relu] for v in scoring.stream(dg.graph, [relu], data)])
    moment = np.square(x.astype(np.float64)).mean(axis=(0, 2, 3))
    w1 = dg.graph.params[dg.graph.node_by_name["Conv_1"].inputs[1]].astype(np.float64)
    expected = moment * np.square(w1).sum(axis=(0, 2, 3))
    got = CRITERIA["output"](ctx, group)
    np.testing.assert_allclose(got, expected / expected.mean(), rtol=1e-6)


def test_calibration_data_decides_what_random_inputs_cannot_see():
    dg = planted()
    on_data = make_plan(dg, ratio=0.25, round_to=1, criterion="activation", data=calib()).decisions[0].removed
    on_random = make_plan(dg, ratio=0.25, round_to=1, criterion="activation", data=calib(quiet=False)).decisions[0].removed
    assert set(on_data) == {SILENT, DEAD}
    assert SILENT not in on_random and DEAD in on_random  # random inputs do drive that channel


@pytest.mark.parametrize("criterion", ["activation", "output", "reconstruction"])
def test_data_driven_criteria_without_data_fail_naming_calib(criterion):
    dg = planted()
    with pytest.raises(PlanError, match="--calib"):
        make_plan(dg, criterion=criterion)


def test_missing_data_fails_before_any_streaming(monkeypatch):
    calls = []
    monkeypatch.setattr(scoring, "stream", lambda *a, **k: calls.append(a) or iter(()))
    with pytest.raises(PlanError):
        make_plan(planted(), criterion="output")
    assert calls == []


@pytest.mark.parametrize("criterion", ["activation", "output", "reconstruction"])
def test_statistics_of_every_group_come_from_one_pass(monkeypatch, criterion):
    dg = DependencyGraph(onnx_in.from_model(residual()))
    assert len(dg.prunable_groups()) >= 2
    passes = []
    real = scoring.stream

    def counting(graph, tensors, *args, **kwargs):
        passes.append(list(tensors))
        return real(graph, tensors, *args, **kwargs)

    monkeypatch.setattr(scoring, "stream", counting)
    data = CalibrationSet({"input": np.random.default_rng(1).standard_normal((6, 3, 8, 8)).astype(np.float32)})
    plan = make_plan(dg, ratio=0.5, criterion=criterion, data=data)
    assert len(passes) == 1
    wanted = {e.tensor for g in dg.prunable_groups() for e in read_ends(dg, g)}
    assert set(passes[0]) == wanted
    assert {d.group for d in plan.decisions} == {g.id for g in dg.prunable_groups()}


def test_context_caches_statistics_and_counts_passes():
    dg = planted()
    ctx = ScoringContext(dg, data=calib(n=4))
    relu = dg.graph.node_by_name["Relu_0"].outputs[0]
    first = ctx.stats(relu, (1,))
    assert ctx.stats(relu, (1,)) is first and ctx.passes == 1
    gram = ctx.gram(relu, (1,))
    assert ctx.passes == 2 and gram.shape == (8, 8)
    np.testing.assert_allclose(np.diag(gram), first.second_moment, rtol=1e-9)


def test_cli_refuses_a_data_driven_criterion_without_calib(tmp_path, capfd):
    from onnxprune.cli import main
    from support.small_models import save
    model = save(conv_chain(), tmp_path / "in.onnx")
    out = tmp_path / "out.onnx"
    code = main([model, str(out), "--criterion", "output", "-q"])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("onnxprune: error:") and "--calib" in err
    assert not out.exists()


@pytest.mark.parametrize("criterion", ["activation", "output", "reconstruction"])
def test_cli_prunes_with_calib(tmp_path, capfd, criterion):
    from onnxprune.cli import main
    from support.small_models import save
    model = save(conv_chain(), tmp_path / "in.onnx")
    data = tmp_path / "calib.npz"
    np.savez(data, input=calib(n=8).arrays["input"])
    out = tmp_path / "out.onnx"
    code = main([model, str(out), "--criterion", criterion, "--calib", str(data), "--ratio", "0.5", "-q",
                 "--no-validate"])
    assert code == 0, capfd.readouterr().err
    assert out.exists()


# ------------------------------------------------------------------ reconstruction
PAIR, SUM = (1, 4), 6  # linear_mix: Conv_0 channel SUM = channel 1 + channel 4, with the largest weights


def linear_mix(k=1):
    """input[1,16,4,4] -> Conv_0 1x1 (8) -> Conv_1 kxk (5) -> output: a linear reader of Conv_0's channels,
    where channel SUM is exactly the sum of the PAIR channels (weights and bias), scaled up."""
    from support.builder import GraphBuilder
    b = GraphBuilder(seed=3, name="linear_mix")
    x = b.input("input", [1, 16, 4, 4])
    b.output(b.rename(b.conv(b.conv(x, 8, k=1), 5, k=k), "output"))
    graph = onnx_in.from_model(b.build())
    conv0 = graph.node_by_name["Conv_0"]
    w, bias = graph.params[conv0.inputs[1]].copy(), graph.params[conv0.inputs[2]].copy()
    w[SUM] = w[PAIR[0]] + w[PAIR[1]]
    bias[SUM] = bias[PAIR[0]] + bias[PAIR[1]]
    for k in PAIR + (SUM,):  # the dependent channels are the strongest: norms and energy keep them
        w[k] *= 4.0
        bias[k] *= 4.0
    graph.params.update({conv0.inputs[1]: w, conv0.inputs[2]: bias})
    return DependencyGraph(graph)


def mix_data(n=40, seed=0):
    return CalibrationSet({"input": np.random.default_rng(seed).standard_normal((n, 16, 4, 4)).astype(np.float32)})


@pytest.mark.parametrize("k", [1, 3])
def test_reconstruction_removes_a_channel_the_others_rebuild_first(k):
    dg = linear_mix(k)
    needs = CRITERIA["reconstruction"].needs(ScoringContext(dg), dg.group_of("Conv_0"))
    # a 3x3 reader is seen through its rule's matrix view (im2col): every kernel tap a column
    assert [n.kind for n in needs] == [scoring.Collect.GRAM if k == 1 else scoring.Collect.UNFOLDED_GRAM]
    s = scores(dg, "reconstruction", mix_data())
    first = int(np.argmin(s))
    assert first in PAIR + (SUM,)
    second = int(np.argsort(s)[1])
    assert s[first] < 1e-3 * (s[second] - s[first])  # rebuilding it costs (almost) nothing
    assert second not in PAIR + (SUM,)  # once one is gone, the other two are needed
    for weight_based in ("l2", "output"):  # by magnitude, the dependent channels look most important
        other = scores(dg, weight_based, mix_data())
        assert set(np.argsort(other)[-3:]) == set(PAIR + (SUM,))
    plan = make_plan(dg, ratio=0.125, round_to=1, criterion="reconstruction", data=mix_data())
    assert plan.decisions[0].removed == (first,)


def test_removing_the_rebuildable_channel_and_refitting_restores_the_outputs():
    """The claim behind the score: a least-squares re-fit of Conv_1 over the kept channels
    reproduces the original outputs exactly (numpy on the same data)."""
    dg = linear_mix()
    data = mix_data()
    first = int(np.argmin(scores(dg, "reconstruction", data)))
    relu_free = dg.graph.node_by_name["Conv_0"].outputs[0]
    x = np.concatenate([v[relu_free] for v in scoring.stream(dg.graph, [relu_free], data)])
    x = np.moveaxis(x, 1, -1).reshape(-1, 8).astype(np.float64)
    w1 = dg.graph.params[dg.graph.node_by_name["Conv_1"].inputs[1]][:, :, 0, 0].astype(np.float64)
    y = x @ w1.T
    kept = [k for k in range(8) if k != first]
    refit, *_ = np.linalg.lstsq(x[:, kept], y, rcond=None)
    np.testing.assert_allclose(x[:, kept] @ refit, y, atol=1e-4 * np.abs(y).max())


def test_reconstruction_ranks_dead_and_unread_channels_first():
    dg = planted()
    s = scores(dg, "reconstruction", calib())
    assert set(np.argsort(s, kind="stable")[:3]) == {SILENT, MUTED, DEAD}


def test_greedy_matches_least_squares_on_sampled_outputs():
    """greedy_scores against brute force: the first removal is the channel whose re-fitted
    removal error (numpy lstsq) is smallest, and the cumulative score after two removals is
    that pair's re-fitted error, relative to the output energy."""
    from onnxprune.selection import Reader, greedy_scores
    rng = np.random.default_rng(4)
    n, m, samples = 6, 3, 400
    mix = rng.standard_normal((n, n)) * np.array([1.0, 0.2, 1.0, 0.5, 1.0, 2.0])
    x = rng.standard_normal((samples, n)) @ mix
    w = rng.standard_normal((n, m))
    y = x @ w
    energy = np.square(y).sum()

    def refit_error(removed):
        kept = [k for k in range(n) if k not in removed]
        coef, *_ = np.linalg.lstsq(x[:, kept], y, rcond=None)
        return np.square(y - x[:, kept] @ coef).sum() / energy

    gram = x.T @ x / samples
    reader = Reader([np.array([k]) for k in range(n)], w, np.diag(gram).copy(), gram)
    s = greedy_scores([reader], n)
    order = list(np.argsort(s))
    singles = [refit_error([k]) for k in range(n)]
    assert order[0] == int(np.argmin(singles))
    np.testing.assert_allclose(s[order[0]], singles[order[0]], rtol=1e-3)
    np.testing.assert_allclose(s[order[1]], refit_error(order[:2]), rtol=1e-3)
    assert np.all(np.diff(s[order]) > 0)  # strictly increasing in removal order
    np.testing.assert_allclose(s[order[-1]], 1.0, rtol=1e-3)  # removing everything loses all the energy


def test_unfolded_gram_is_the_second_moment_of_3x3_patches():
    dg = linear_mix(3)
    data = mix_data(n=5)
    gram = ScoringContext(dg, data=data).unfolded_gram("Conv_1")
    x_name = dg.graph.node_by_name["Conv_0"].outputs[0]
    x = np.concatenate([v[x_name] for v in scoring.stream(dg.graph, [x_name], data)]).astype(np.float64)
    padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    patches = [padded[n, :, i:i + 3, j:j + 3].reshape(-1) for n in range(5) for i in range(4) for j in range(4)]
    u = np.array(patches)  # rows: positions; columns: (channel, tap), the weight's layout
    np.testing.assert_allclose(gram, u.T @ u / len(u), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("criterion, planted_first", [("activation", (SILENT, DEAD)),  # blind to readers
                                                      ("output", (SILENT, MUTED, DEAD)),
                                                      ("reconstruction", (SILENT, MUTED, DEAD))])
def test_global_ranking_takes_the_planted_channels_across_groups(criterion, planted_first):
    """Scores share one scale across groups (budget.normalize): with --global, Conv_0's planted
    channels go before any channel of Conv_1's group."""
    dg = planted()
    total = sum(g.size for g in dg.prunable_groups())
    plan = make_plan(dg, ratio=len(planted_first) / total, global_rank=True, criterion=criterion, data=calib(),
                     round_to=1)  # exact counts: the planted channels, whatever the width grid
    removed = {(d.group, k) for d in plan.decisions for k in d.removed}
    assert removed == {(dg.group_of("Conv_0").id, k) for k in planted_first}


@pytest.mark.parametrize("arch", ["vgg_flatten_gemm", "inception", "resnext", "mobilenetv2", "shufflenetv2"])
def test_data_driven_plans_stay_valid_on_every_kind_of_reader(arch):
    """Readers of every kind (Flatten->Gemm, concats, grouped and depthwise convs, shuffles) score
    without error and the pruned model runs with unchanged output shapes; reconstruction where
    it is quick (grouped, depthwise, shuffled readers)."""
    from onnxprune import Pruner
    from support.architectures import ARCHITECTURES
    from support.oracle import random_feeds, run
    criteria = ["output"] + (["reconstruction"] if arch in ("resnext", "shufflenetv2", "mobilenetv2") else [])
    for criterion in criteria:
        pruner = Pruner.from_model(ARCHITECTURES[arch]())
        original = pruner.to_model()
        plan = pruner.prune(ratio=0.5, criterion=criterion, data=pruner.random_inputs(2))
        assert plan.removed_channels > 0
        feeds = random_feeds(original)
        before, after = run(original, feeds), run(pruner.to_model(), feeds)
        assert [a.shape for a in after] == [b.shape for b in before]
        assert all(np.all(np.isfinite(a)) for a in after)
