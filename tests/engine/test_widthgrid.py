"""The width grid: steps chosen from (injected) timings, the cache, group steps, budgets on the grid."""
import json
import math

import numpy as np
import pytest

from onnxprune import onnx_in, widthgrid
from onnxprune.api import Pruner
from onnxprune.depgraph import DependencyGraph
from onnxprune.options import PruneOptions
from onnxprune.plan import make_plan
from onnxprune.registry import builtin_registry
from onnxprune.rules import LayerKind, NodeView
from onnxprune.targets import TOLERANCE
from onnxprune.validate import make_inputs, session
from onnxprune.widthgrid import GridMode, GridSource, WidthGrid, choose_step, group_steps
from support.architectures import ARCHITECTURES
from support.builder import GraphBuilder
from support.small_models import wide_cnn

WIDTHS = widthgrid.WIDTHS


def blocked(step: int, penalty: float = 1.6, noise: float = 0.0, seed: int = 0) -> dict[int, float]:
    """Timings of a kernel with a fast path at multiples of ``step``: linear in the width, slower elsewhere."""
    rng = np.random.default_rng(seed)
    return {w: 1e-4 * w * (1.0 if w % step == 0 else penalty) * (1 + noise * rng.standard_normal())
            for w in WIDTHS}


# ------------------------------------------------------------------ steps from timings
@pytest.mark.parametrize("step", [1, 2, 4, 8, 16])
def test_the_step_is_the_block_of_the_fast_path(step):
    assert choose_step(blocked(step)) == step


def test_a_flat_kernel_takes_any_width():
    assert choose_step({w: 1e-3 for w in WIDTHS}) == 1
    assert choose_step({}) == 1


def test_noise_within_the_slack_keeps_the_step():
    for seed in range(5):
        assert choose_step(blocked(8, noise=0.01, seed=seed)) == 8


def test_one_outlier_does_not_move_the_step():
    timings = blocked(4)
    timings[60] *= 1.5  # one multiple of 4 measured slow by chance
    assert choose_step(timings) == 4


def test_a_width_is_slow_only_when_a_wider_one_is_clearly_quicker():
    timings = {40: 1.0, 41: 1.5, 42: 1.02, 43: 0.99}
    assert widthgrid.slow_widths(timings, slack=0.05) == {41}


def test_measure_asks_the_timer_for_every_kind_the_rules_build():
    registry = builtin_registry()
    asked = []

    def timer(kind, widths):
        asked.append(kind)
        return blocked({LayerKind.DEPTHWISE: 16, LayerKind.GEMM: 1}.get(kind, 8))
    grid = widthgrid.measure(registry, "cpu", timer)
    assert set(asked) == set(LayerKind) == set(registry.layer_benches())
    assert grid.source is GridSource.MEASURED
    assert grid.step(LayerKind.DEPTHWISE) == 16 and grid.step(LayerKind.CONV) == 8 and grid.step(LayerKind.GEMM) == 1


@pytest.mark.parametrize("kind", list(LayerKind))
def test_each_bench_model_runs_and_its_layers_are_of_its_kind(kind):
    graph = builtin_registry().layer_benches()[kind](24)
    out = session(graph, threads=1).run(None, make_inputs(graph))[0]
    assert np.all(np.isfinite(out))
    registry = builtin_registry()
    kinds = {registry.lookup(n.domain, n.op_type, 17).layer(NodeView(n, graph)).kind for n in graph.nodes}
    assert kinds == {kind}
    assert list(out.shape) == list(graph.outputs[0].shape)


# ------------------------------------------------------------------ default and cache
def test_the_default_grid_when_nothing_is_measured(tmp_path, monkeypatch):
    def fail(kind, widths):
        raise AssertionError("measured")
    grid = widthgrid.load(builtin_registry(), "cpu", GridMode.DEFAULT, tmp_path, timer=fail)
    assert grid == widthgrid.default_grid("cpu") and grid.source is GridSource.DEFAULT
    assert all(grid.step(k) == 8 for k in LayerKind if k is not LayerKind.GEMM)
    monkeypatch.setenv(widthgrid.MODE_ENV, "default")  # the environment variable alone
    assert widthgrid.load(builtin_registry(), "cpu", None, tmp_path, timer=fail) == grid
    assert not list(tmp_path.iterdir())  # nothing written


def test_an_unknown_grid_mode_is_an_option_error(tmp_path, monkeypatch):
    from onnxprune.errors import OptionError
    monkeypatch.setenv(widthgrid.MODE_ENV, "fastest")
    with pytest.raises(OptionError, match="ONNXPRUNE_WIDTH_GRID"):
        widthgrid.load(builtin_registry(), "cpu", None, tmp_path)


def test_a_measured_grid_is_cached_per_provider_and_machine(tmp_path):
    calls = []

    def timer(kind, widths):
        calls.append(kind)
        return blocked(4)
    first = widthgrid.load(builtin_registry(), "cpu", GridMode.MEASURED, tmp_path, timer=timer)
    assert first.source is GridSource.MEASURED and len(calls) == len(LayerKind)
    path = widthgrid.cache_path("cpu", tmp_path)
    assert path.exists() and widthgrid.machine_key("cpu") in path.name
    again = widthgrid.load(builtin_registry(), "cpu", GridMode.MEASURED, tmp_path, timer=timer)
    assert len(calls) == len(LayerKind)  # read, not measured again
    assert again.source is GridSource.CACHED and again.steps == first.steps
    assert again.timings[LayerKind.CONV] == pytest.approx(first.timings[LayerKind.CONV])
    assert widthgrid.cache_path("cuda", tmp_path) != path


def test_a_damaged_cache_is_measured_again_and_an_unwritable_one_only_not_kept(tmp_path):
    path = widthgrid.cache_path("cpu", tmp_path)
    path.write_text("{not json")
    grid = widthgrid.load(builtin_registry(), "cpu", GridMode.MEASURED, tmp_path, timer=lambda k, w: blocked(2))
    assert grid.source is GridSource.MEASURED and json.loads(path.read_text())["steps"]["conv"] == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    grid = widthgrid.load(builtin_registry(), "cpu", GridMode.MEASURED, blocker / "sub", timer=lambda k, w: blocked(2))
    assert grid.step(LayerKind.CONV) == 2


# ------------------------------------------------------------------ group steps
def _grid(**steps) -> WidthGrid:
    return WidthGrid("cpu", {LayerKind(k): v for k, v in steps.items()})


def _mobile() -> DependencyGraph:
    """1x1 expand (48) -> depthwise -> 1x1 project (24) -> GAP -> Gemm."""
    b = GraphBuilder(seed=3)
    x = b.input("input", [1, 8, 8, 8])
    x = b.relu(b.conv(x, 48, k=1))
    x = b.relu(b.conv(x, 48, k=3, group=48))
    x = b.conv(x, 24, k=1)
    y = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    b.output(b.rename(b.gemm(y, 10), "output"))
    return DependencyGraph(onnx_in.from_model(b.build()))


def test_a_group_takes_the_lcm_of_the_steps_of_its_layers():
    dg = _mobile()
    expand, project = dg.group_of("Conv_0").id, dg.group_of("Conv_2").id
    steps = group_steps(dg, _grid(conv1x1=4, depthwise=16, gemm=1))
    assert steps[expand] == 16 and steps[project] == 4
    steps = group_steps(dg, _grid(conv1x1=4, depthwise=2, gemm=8))
    assert steps[expand] == 4 and steps[project] == 8  # the project's channels are the Gemm's inputs
    assert set(group_steps(dg, _grid()).values()) == {1}


def test_a_grouped_conv_counts_its_width_per_group():
    b = GraphBuilder(seed=4)
    x = b.input("input", [1, 8, 8, 8])
    x = b.relu(b.conv(x, 32, k=1))
    x = b.relu(b.conv(x, 32, k=3, group=4))  # 4 groups of 8: one group channel is 4 channels
    b.output(b.rename(b.conv(x, 8, k=1), "output"))
    dg = DependencyGraph(onnx_in.from_model(b.build()))
    inner = dg.group_of("Conv_1").id
    assert dg.groups[inner].size == 8
    assert group_steps(dg, _grid(grouped=4, conv1x1=1))[inner] == 4  # 4 per group, not 4 / 4
    assert group_steps(dg, _grid(grouped=1, conv1x1=8))[dg.group_of("Conv_0").id] == 2  # 8 of 32 channels


# ------------------------------------------------------------------ budgets on the grid
def _kept_widths(pruner: Pruner) -> dict[str, int]:
    """Output channels of every conv and Gemm of the pruned model."""
    graph = pruner.graph
    return {n.name: graph.params[n.inputs[1]].shape[0] for n in graph.nodes
            if n.op_type in ("Conv", "Gemm") and n.inputs[1] in graph.params}


def _off_grid(pruner: Pruner, original: Pruner, step: int) -> list[str]:
    """Changed widths that are neither a multiple of ``step`` nor a divisor of it."""
    before, after = _kept_widths(original), _kept_widths(pruner)
    return [n for n in after if after[n] != before[n] and after[n] % step and step % after[n]]


MODELS = {"wide": wide_cnn, "mobilenetv2": ARCHITECTURES["mobilenetv2"],
          "resnet_bottleneck": ARCHITECTURES["resnet_bottleneck"]}


@pytest.mark.parametrize("options", [
    dict(ratio=0.37), dict(ratio=0.37, global_rank=True),
    dict(target_macs=0.5), dict(target_macs=0.5, global_rank=True), dict(target_params=0.6),
], ids=["uniform", "global", "target-macs", "target-macs-global", "target-params"])
@pytest.mark.parametrize("arch", ["wide", "mobilenetv2", "resnet_bottleneck"])
def test_every_budget_keeps_widths_on_the_grid(arch, options):
    """Widths stay multiples of 8 (or 4, 2, 1 below 8); targets are met (on toy widths, where a step
    of 8 is too coarse to land within tolerance, on a finer grid)."""
    original = Pruner.from_model(MODELS[arch]())
    pruner = Pruner.from_model(MODELS[arch]())
    macs0, params0 = pruner.macs(), pruner.params()
    pruner.prune(width_grid="default", **options)
    fell_back = pruner.searches and "conv 8" not in pruner.searches[-1].grid
    assert not _off_grid(pruner, original, 8) or fell_back
    assert arch != "wide" or not fell_back  # wide layers land the target on the grid itself
    assert pruner.macs() < macs0
    if "target_macs" in options:
        assert abs(pruner.macs() / macs0 - options["target_macs"]) <= TOLERANCE
    if "target_params" in options:
        assert abs(pruner.params() / params0 - options["target_params"]) <= TOLERANCE
    pruner.validate(runs=0)


def test_round_to_one_means_exact_widths_and_an_explicit_round_to_wins():
    original = Pruner.from_model(ARCHITECTURES["mobilenetv2"]())
    exact = Pruner.from_model(ARCHITECTURES["mobilenetv2"]())
    exact.prune(ratio=0.37, round_to=1)
    assert _off_grid(exact, original, 8)  # exact widths: some fall off the grid
    sixteen = Pruner.from_model(ARCHITECTURES["mobilenetv2"]())
    sixteen.prune(ratio=0.37, round_to=16)
    assert not _off_grid(sixteen, original, 16)


def test_a_measured_grid_is_what_the_pruner_uses(tmp_path, monkeypatch):
    monkeypatch.setenv(widthgrid.CACHE_ENV, str(tmp_path))
    path = widthgrid.cache_path("cpu")
    grid = WidthGrid("cpu", {k: 16 for k in LayerKind}, GridSource.MEASURED)
    path.write_text(json.dumps(grid.to_dict()))  # as if measured before on this machine
    original, pruner = _kept_widths(Pruner.from_model(wide_cnn())), Pruner.from_model(wide_cnn())
    pruner.prune(ratio=0.6, width_grid="measured")
    assert pruner.width_grid("cpu", "measured").source is GridSource.CACHED
    after = _kept_widths(pruner)
    changed = [n for n in after if after[n] != original[n]]
    assert len(changed) >= 6
    assert all(after[n] % 16 == 0 for n in changed if original[n] % 16 == 0)  # 40 channels: off the grid already


def test_the_grid_keeps_the_transformer_widths_of_multiples_of_eight():
    """MLP widths and heads prune as with exact widths (a GEMM takes any width on CPU; a head is
    already a multiple of 8 channels under the GEMM step of 8 on CUDA)."""
    from support.transformers import bert_classifier
    exact = Pruner.from_model(bert_classifier())
    exact.prune(ratio=0.5, round_to=1)
    dg = Pruner.from_model(bert_classifier()).depgraph
    for provider in ("cpu", "cuda"):  # the plan alone: planning on the CUDA grid needs no CUDA
        assert make_plan(dg, PruneOptions(ratio=0.5), grid=widthgrid.default_grid(provider)) == exact.plans[0]
