"""The sensitivity budget (--budget sensitivity): the target spent where measured output error per saved
MAC is lowest. On models with planted sensitive and redundant layers it meets the target, cuts the
redundant layer, and never gives a worse held-out fidelity than the uniform budget."""
import numpy as np
import pytest

from onnxprune import onnx_in
from onnxprune.api import Pruner
from onnxprune.budget import GroupBudget
from onnxprune.errors import OptionError, PlanError
from onnxprune.options import BudgetMode, PruneOptions, default_budget
from onnxprune.sensitivity import Point, Sensitivity, Unit
from onnxprune.sensitivity_budget import Ladder, _pooled
from onnxprune.targets import TOLERANCE
from support.architectures import ARCHITECTURES
from support.builder import GraphBuilder

EXACT = dict(round_to=1, never_slower=False)  # exact widths, no timing: fidelity is what is compared


def planted() -> Pruner:
    """input -> Conv_0(8) -> Relu (important: every channel carries its own signal into the narrow
    Conv_2), input -> Conv_1(16) -> Relu (redundant: channels 8..15 duplicate 0..7, and Conv_2 reads
    them weakly); Concat -> Conv_2(4, 1x1) -> Relu -> Conv_3(8) -> Relu -> GAP -> Gemm(10)."""
    b = GraphBuilder(seed=5, name="planted")
    x = b.input("input", [1, 3, 8, 8])
    y = b.op("Concat", [b.relu(b.conv(x, 8)), b.relu(b.conv(x, 16))], axis=1)
    y = b.relu(b.conv(b.relu(b.conv(y, 4, k=1)), 8))
    b.output(b.rename(b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1), 10), "output"))
    graph = onnx_in.from_model(b.build())
    params, node = graph.params, graph.node_by_name
    w1, b1 = node["Conv_1"].inputs[1], node["Conv_1"].inputs[2]
    params[w1] = np.concatenate([params[w1][:8]] * 2)
    params[b1] = np.concatenate([params[b1][:8]] * 2)
    w2 = params[node["Conv_2"].inputs[1]].copy()
    w2[:, :8] *= np.float32(3.0)  # the important channels, read strongly
    w2[:, 8:16] *= np.float32(0.03)  # the duplicates, read weakly
    w2[:, 16:] = w2[:, 8:16]
    params[node["Conv_2"].inputs[1]] = w2
    return Pruner(graph)


def plant(model) -> tuple[Pruner, str]:
    """An architecture with one layer made redundant: the second group rooted at a convolution has its
    channels scaled to near zero (by the BatchNorm after it, else by its own weights and bias: Relu
    follows). Returns the pruner and that convolution's name."""
    graph = onnx_in.from_model(model)
    roots = [g.root.node for g in Pruner(graph).prunable_groups()]
    node = [graph.node_by_name[r] for r in roots if graph.node_by_name[r].op_type == "Conv"][1]
    after = graph.consumers.get(node.outputs[0], [])
    owner = after[0][0] if len(after) == 1 and after[0][0].op_type == "BatchNormalization" else node
    for slot in (1, 2):  # BatchNorm's gamma and beta, or the conv's weight and bias
        graph.params[owner.inputs[slot]] = graph.params[owner.inputs[slot]] * np.float32(0.02)
    return Pruner(graph), node.name


def data(pruner: Pruner):
    return pruner.random_inputs(32, seed=0), pruner.random_inputs(32, seed=1)  # calibration, held out


def pruned(pruner: Pruner, budget: str, calib, recover: bool = False, **target) -> tuple[Pruner, float]:
    import copy
    p = copy.deepcopy(pruner)
    macs0 = p.macs()
    p.prune(PruneOptions(budget=budget, **target, **EXACT), data=calib)
    if recover:
        p.recover(calib)
    return p, p.macs() / macs0


def removed_fraction(pruner: Pruner, root: str) -> float:
    """The fraction of the channels of the group rooted at node ``root`` that the last plan removed."""
    decision = next((d for d in pruner.plans[-1].decisions if d.root.split(".out")[0] == root), None)
    return len(decision.removed) / decision.size if decision else 0.0


# ------------------------------------------------------------ planted layers
@pytest.mark.parametrize("recover", [False, True])
def test_the_search_cuts_the_redundant_layer_and_keeps_the_important_one(recover):
    pruner = planted()
    calib, held = data(pruner)
    results = {budget: pruned(pruner, budget, calib, recover, target_macs=0.65)
               for budget in ("uniform", "sensitivity")}
    sens, reached = results["sensitivity"]
    assert reached <= 0.65 + TOLERANCE and sens.searches[-1].met
    assert removed_fraction(sens, "Conv_1") >= 0.5 and removed_fraction(sens, "Conv_0") == 0.0
    uniform, _ = results["uniform"]
    assert sens.fidelity(held).cosine >= uniform.fidelity(held).cosine
    assert sens.fidelity(held).cosine > 0.99  # what is left of the redundant layer rebuilds it
    sens.validate(runs=0)


PLANTED_ARCHITECTURES = ["plain_cnn", "vgg_flatten_gemm", "resnet_basic", "mobilenetv2", "inception"]


@pytest.mark.parametrize("arch", PLANTED_ARCHITECTURES)
@pytest.mark.parametrize("metric", ["macs", "params"])
def test_never_worse_than_uniform_on_planted_architectures(arch, metric):
    pruner, _ = plant(ARCHITECTURES[arch]())
    calib, held = data(pruner)
    target = {f"target_{metric}": 0.6}
    results = {budget: pruned(pruner, budget, calib, **target) for budget in ("uniform", "sensitivity")}
    sens, uniform = results["sensitivity"][0], results["uniform"][0]
    search = sens.searches[-1]
    assert search.met and search.reached <= 0.6 + TOLERANCE
    assert sens.fidelity(held).cosine >= uniform.fidelity(held).cosine
    sens.validate(runs=0)


def test_a_ratio_without_target_removes_that_fraction_of_all_channels():
    pruner = planted()
    calib, _ = data(pruner)
    total = sum(g.size for g in pruner.prunable_groups())
    plan = pruner.plan(PruneOptions(budget="sensitivity", ratio=0.3, **EXACT), data=calib)
    assert plan.removed_channels >= int(0.3 * total)
    assert "Conv_0" not in {d.root.split(".out")[0] for d in plan.decisions}  # never the important layer first


def test_progress_wraps_every_measurement():
    pruner = planted()
    calib, _ = data(pruner)
    seen = []

    def progress(jobs):
        seen.extend(jobs)
        return jobs
    pruner.plan(PruneOptions(budget="sensitivity", target_macs=0.7, **EXACT), data=calib, progress=progress)
    assert len(seen) == 3 * len(pruner.prunable_groups())  # every unit at 0.25, 0.5, 0.75


# ------------------------------------------------------------ options
def test_the_budget_needs_calibration_data_and_is_not_global():
    pruner = planted()
    with pytest.raises(PlanError, match="calibration data"):
        pruner.plan(PruneOptions(budget="sensitivity", target_macs=0.5, **EXACT))
    with pytest.raises(OptionError, match="--global is --budget global"):
        PruneOptions(budget="sensitivity", global_rank=True).check()
    with pytest.raises(OptionError, match="--budget must be one of"):
        PruneOptions(budget="fisher").check()
    assert PruneOptions(global_rank=True).budget_mode is BudgetMode.GLOBAL
    assert PruneOptions(budget="global", global_rank=True).check().budget_mode is BudgetMode.GLOBAL
    assert default_budget(calib=True, target=True) is BudgetMode.SENSITIVITY
    assert default_budget(calib=True, target=True, recover=True) is BudgetMode.UNIFORM
    assert default_budget(calib=True, target=False) is BudgetMode.UNIFORM
    assert default_budget(calib=False, target=True) is BudgetMode.UNIFORM
    assert default_budget(calib=True, target=True, global_rank=True) is BudgetMode.GLOBAL


# ------------------------------------------------------------ the ladder
def _unit(name, group, channels, errors, macs):
    points = [Point(r, int(r * channels), 1 - e, 0.0, 0.0, None, m, m) for r, e, m in zip((0.25, 0.5, 0.75), errors, macs)]
    return Unit(name, name, [group], channels, points)


def _budget(group, size, step=1, fixed=None):
    return GroupBudget(group, size, np.ones(size), fixed, step=step)


def ladder_of(units, budgets, **kw):
    return Ladder(Sensitivity(units, [0.25, 0.5, 0.75], "l2", "test", 8), budgets, **kw)


def test_the_ladder_takes_the_cheapest_error_per_saving_first():
    cheap = _unit("cheap", 0, 8, [1e-4, 2e-4, 3e-4], [0.9, 0.8, 0.7])
    dear = _unit("dear", 1, 8, [1e-2, 2e-2, 3e-2], [0.9, 0.8, 0.7])
    ladder = ladder_of([dear, cheap], [_budget(0, 8), _budget(1, 8)])
    assert ladder.counts(0.25) == {0: 4}  # 4 of 16 channels: all from the cheap unit
    assert ladder.counts(0.5) == {0: 6, 1: 2}  # the cheap unit as far as measured (0.75) first
    assert ladder.counts(0.75) == {0: 6, 1: 6}  # past the measurements only once both units are there
    previous = {}
    for level in np.linspace(0, 1, 21):
        counts = ladder.counts(level)
        assert all(counts.get(g, 0) >= n for g, n in previous.items())  # more level, never fewer removed
        previous = counts
    assert ladder.counts(1.0) == {0: 7, 1: 7}  # at least one channel stays


def test_a_unit_whose_error_jumps_late_is_priced_on_its_hull():
    # cheap at first, very dear at the end: pooled so that its prices never fall along the unit
    prices = _pooled(np.array([1.0, 0.1, 5.0]), np.array([1.0, 1.0, 1.0]))
    assert np.allclose(prices, [0.55, 0.55, 5.0])
    assert list(prices) == sorted(prices)


def test_grid_steps_caps_and_fixed_ratios_hold():
    a = _unit("a", 0, 16, [1e-4, 2e-4, 3e-4], [0.9, 0.8, 0.7])
    b = _unit("b", 1, 8, [1e-2, 2e-2, 3e-2], [0.9, 0.8, 0.7])
    ladder = ladder_of([a, b], [_budget(0, 16, step=4), _budget(1, 8, fixed=0.5)], max_ratio=0.5)
    for level in np.linspace(0, 1, 11):
        counts = ladder.counts(level)
        assert counts.get(1) == 4  # the fixed ratio, whatever the level
        assert counts.get(0, 0) % 4 == 0 and counts.get(0, 0) <= 8  # on the grid, within --max-ratio


def test_a_latency_target_is_met_on_measured_latency(monkeypatch):
    """Steps ranked by error per saved MAC, candidates timed (scripted: 0.2 ms + 0.8 ms x the MACs fraction)."""
    from onnxprune.metrics import count_macs
    from onnxprune.options import LatencyOptions
    from support.timing import ScriptedTimings
    pruner = planted()
    calib, held = data(pruner)
    base, current = pruner.macs(), []
    ScriptedTimings(lambda k, n: 1e-3 if k == 0 else (0.2 + 0.8 * current[-1] / base) * 1e-3).install(monkeypatch)
    real_fraction = pruner._fraction

    def fraction(metric, options, provider="cpu", graph_latency=None):
        measure = real_fraction(metric, options, provider, graph_latency)
        return lambda graph: (current.append(count_macs(graph, pruner.registry)), measure(graph))[1]
    monkeypatch.setattr(pruner, "_fraction", fraction)
    pruner.prune(PruneOptions(budget="sensitivity", target_latency=0.7, latency=LatencyOptions(min_runs=5, warmup=1),
                              **EXACT), data=calib)
    search = pruner.searches[-1]
    assert search.metric == "latency" and search.met
    assert removed_fraction(pruner, "Conv_1") > 0 and removed_fraction(pruner, "Conv_0") == 0.0
