"""Models as users bring them (issue 17): model-zoo IR 3, opsets 7/8, weights built from constants, a GCN
written as MatMuls, and torch's own attention (torchvision ViT, nn.TransformerEncoder).

Models: tests/models/realworld/ (scripts/build_realworld_models.py) and tests/models/tv_vit_*, char_transformer_*
(scripts/export_transformers.py). Every pruned model passes onnx.checker and runs in onnxruntime with the
original's output shapes; every exact group matches the zeroed-channels oracle.
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnxprune import Pruner, onnx_in
from onnxprune.calibration import has_batch_axis
from onnxprune.ir import Value
from support.exported import MODELS_DIR, by_name
from support.oracle import assert_group_oracle, assert_group_oracle_at_lengths, run

REALWORLD = os.path.join(MODELS_DIR, "realworld")
ZOO = ["zoo_ir3", "zoo_opset7", "zoo_opset8", "zoo_constant_weights"]
# MACs at --ratio 0.5, as measured: ceilings (lower them as rules land)
ZOO_MACS = 0.289
GCN_MACS = 0.47
TORCH_ATTENTION_MACS = {"tv_vit_ts": 0.527, "tv_vit_dynamo": 0.527,
                        "char_transformer_ts": 0.555, "char_transformer_dynamo": 0.555}


def _path(name):
    return os.path.join(REALWORLD, f"{name}.onnx")


def _image():
    return {"data_0": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "onnxprune", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def _initializers_are_inputs(model):
    return {t.name for t in model.graph.initializer} <= {v.name for v in model.graph.input}


# ---- IR 3 -------------------------------------------------------------------------------------------------
def test_ir3_initializers_stay_graph_inputs_through_every_edit():
    """Model-zoo IR 3 lists every initializer as a graph input: after each group pruned, and each
    prune round, the written model still does, passes the checker and matches the oracle."""
    model = onnx.load(_path("zoo_ir3"))
    assert model.ir_version == 3 and _initializers_are_inputs(model)
    pruner = Pruner.from_model(model)
    groups = pruner.prunable_groups()
    assert len(groups) == 2
    for group in groups:
        assert_group_oracle(pruner.depgraph, group, tuple(range(0, group.size, 2)), _image())
    for _ in range(2):  # two rounds: each edit writes an IR 3 model of its own
        pruner.prune(ratio=0.25)
        pruned = pruner.to_model()
        assert pruned.ir_version == 3 and _initializers_are_inputs(pruned)
        onnx.checker.check_model(pruned, full_check=True)
        assert run(pruned, _image())[0].shape == (1, 10)


# ---- opsets 7 and 8 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [7, 8])
def test_opset_7_and_8_zoo_models_are_upgraded_said_so_and_prune(tmp_path, opset):
    src, out, report = _path(f"zoo_opset{opset}"), tmp_path / "out.onnx", tmp_path / "report.json"
    done = _cli(src, str(out), "--ratio", "0.5", "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert f"input     opset {opset} upgraded to opset 9 by onnx's version converter" in done.stdout
    assert json.loads(report.read_text())["conversions"] == [
        f"opset {opset} upgraded to opset 9 by onnx's version converter (the output is opset 9)"]
    pruned = onnx.load(str(out))
    assert pruned.opset_import[0].version == 9 and pruned.ir_version == 3 and _initializers_are_inputs(pruned)
    onnx.checker.check_model(pruned, full_check=True)
    original = onnx.load(src)
    assert run(pruned, _image())[0].shape == run(original, _image())[0].shape
    pruner = Pruner.load(src)  # the upgraded graph: every group still equals zeroing
    assert pruner.notes == [f"opset {opset} upgraded to opset 9 by onnx's version converter (the output is opset 9)"]
    for group in pruner.prunable_groups():
        assert_group_oracle(pruner.depgraph, group, tuple(range(1, group.size, 2)), _image())


def test_an_opset_the_version_converter_cannot_upgrade_is_refused_in_one_line(tmp_path):
    out = tmp_path / "out.onnx"
    done = _cli(_path("scan_opset8"), str(out), "--ratio", "0.5")
    assert done.returncode != 0 and not out.exists()
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "opset 8 is not supported and onnx's version converter cannot upgrade it to opset 9" in done.stderr


# ---- weights built from constants ---------------------------------------------------------------------------
def test_weights_built_by_tile_expand_constant_of_shape_are_folded_and_prune():
    model = onnx.load(_path("zoo_constant_weights"))
    builders = {n.op_type for n in model.graph.node} & {"Tile", "Expand", "ConstantOfShape"}
    assert builders == {"Tile", "Expand", "ConstantOfShape"}
    pruner = Pruner.from_model(model)
    assert pruner.notes == ["4 weights built from constants (ConstantOfShape, Expand, Tile) "
                            "folded into initializers"]
    np.testing.assert_allclose(run(pruner.to_model(), _image())[0], run(model, _image())[0], rtol=1e-6)
    groups = pruner.prunable_groups()
    conv1 = pruner.group_of("conv1_1")  # its weight was Tile(...): before folding, no rule could slice it
    assert conv1 in groups and len(groups) == 2
    for group in groups:
        assert_group_oracle(pruner.depgraph, group, tuple(range(0, group.size, 2)), _image())
    macs = pruner.macs()
    pruner.prune(ratio=0.5, round_to=1)  # the ceiling was measured at exact widths
    pruned = pruner.to_model()
    assert pruned.ir_version == 3 and _initializers_are_inputs(pruned)
    onnx.checker.check_model(pruned, full_check=True)
    assert pruner.macs() / macs <= ZOO_MACS


@pytest.mark.parametrize("name", ZOO)
def test_zoo_models_halve_their_macs(name):
    pruner = Pruner.load(_path(name))
    macs = pruner.macs()
    pruner.prune(ratio=0.5, round_to=1)
    assert pruner.macs() / macs <= ZOO_MACS


def test_a_filled_tensor_added_to_activations_is_not_folded():
    """Only weights are folded: the ConstantOfShape of a bias added after a layer stays a node."""
    from support.builder import GraphBuilder
    b = GraphBuilder(seed=3)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    value = onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [0.5])
    filled = b.op("ConstantOfShape", [b.const(np.array([1, 6, 4, 4], np.int64))], value=value)
    b.output(b.rename(b.conv(b.op("Add", [x, filled]), 3), "output"))
    pruner = Pruner.from_model(b.build())
    assert pruner.notes == [] and "ConstantOfShape" in {n.op_type for n in pruner.graph.nodes}


# ---- GCN as MatMuls -------------------------------------------------------------------------------------------
def _graph_feeds(nodes, seed=0):
    rng = np.random.default_rng(seed)
    a = (rng.random((nodes, nodes)) < 0.3).astype(np.float32) + np.eye(nodes, dtype=np.float32)
    return {"x": rng.standard_normal((nodes, 8)).astype(np.float32), "adj": a / a.sum(axis=1, keepdims=True)}


def test_gcn_as_matmuls_prunes_both_layers_at_any_node_count():
    model = onnx.load(_path("gcn_matmul"))
    pruner = Pruner.from_model(model)  # no input shapes: the node count stays symbolic
    groups = pruner.prunable_groups()
    assert sorted(g.size for g in groups) == [12, 16]
    for group in groups:
        for nodes in (5, 9):
            assert_group_oracle(pruner.depgraph, group, tuple(range(0, group.size, 2)), _graph_feeds(nodes))
    macs = pruner.macs()
    pruner.prune(ratio=0.5)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    assert run(pruned, _graph_feeds(7))[0].shape == (1, 3)
    assert pruner.macs() / macs <= GCN_MACS


def test_gcn_without_a_batch_axis_prunes_from_the_command_line(tmp_path):
    """x [nodes, F] and adj [nodes, nodes] share their first axis: random samples cannot be stacked on it
    (slicing nodes apart broke A @ X); fidelity runs on one random feed instead."""
    out = tmp_path / "out.onnx"
    done = _cli(_path("gcn_matmul"), str(out), "--ratio", "0.5")
    assert done.returncode == 0, done.stderr
    assert "1 random feed (no batch axis)" in done.stdout
    assert run(onnx.load(str(out)), _graph_feeds(6))[0].shape == (1, 3)


def test_batch_axis_is_only_a_leading_symbol_of_its_own_or_a_static_one():
    assert has_batch_axis([Value("x", 1, ("batch", 3, 8, 8)), Value("m", 7, ("batch", "seq"))])
    assert has_batch_axis([Value("x", 1, (1, 3, 8, 8))])
    assert not has_batch_axis([Value("x", 1, ("nodes", 8)), Value("adj", 1, ("nodes", "nodes"))])
    assert not has_batch_axis([Value("x", 1, (5, 8)), Value("adj", 1, (5, 5))])  # "invalid dimensions for x"
    assert not has_batch_axis([Value("x", 1, ("batch", 2, "time")), Value("gain", 1, ())])  # a scalar


# ---- torch's own attention ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TORCH_ATTENTION_MACS))
def test_unfolding_heads_from_the_batch_keeps_the_outputs(name):
    """The Reshape-Transpose-Reshape chains that fold heads into the batch axis, rewritten with the heads on an
    axis of their own (and the TorchScript export's Shape reads of the folded tensors recomputed): the same
    outputs at two batch sizes."""
    exported = by_name(name)
    pruner = Pruner.from_model(exported.load())
    # q, k, v of 2 layers; the dynamo export also folds the keys around their transpose (one more per layer)
    chains = 6 if name.endswith("_ts") else 8
    assert pruner.notes[0] == (f"{chains} Reshape-Transpose-Reshape chains that fold attention heads into the batch "
                               "axis rewritten as Reshape + Transpose with the heads on an axis of their own")
    # the TorchScript exports' unflatten targets (3, width) read the static width at run time, the dynamo
    # export's causal mask is expanded to (seq, seq) read from the static sequence: pinned
    pinned = [n for n in pruner.notes[1:] if "read fixed sizes from tensor shapes" in n]
    assert len(pinned) == len(pruner.notes[1:]) == (0 if name == "tv_vit_dynamo" else 1)
    rewritten = pruner.to_model()
    onnx.checker.check_model(rewritten, full_check=True)
    for k in (0, 1):
        feeds = exported.feeds(k)
        for a, b in zip(run(rewritten, feeds), run(exported.load(), feeds)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TORCH_ATTENTION_MACS))
def test_exports_of_torch_attention_prune_heads_and_mlps(name):
    """torchvision's ViT and nn.TransformerEncoder crashed the Reshape rule (IndexError); their heads were
    folded into the batch axis, and the TorchScript export's q/k/v unflatten reads the width from the input's
    shape at run time (now pinned: the width is static). Heads and MLPs prune and equal zeroing at two batch
    sizes, in both exporters' models."""
    exported = by_name(name)
    pruner = Pruner.from_model(exported.load())
    dg = pruner.depgraph
    exact = [g for g in pruner.prunable_groups() if not dg.inexact_nodes(g)]
    assert sorted(g.size for g in exact) == [4, 4, 128, 128]
    for group in exact:
        assert_group_oracle_at_lengths(dg, group, tuple(range(0, group.size, 3)), exported)
    _prune_half(pruner, exported, TORCH_ATTENTION_MACS[name])


def _prune_half(pruner, exported, max_macs):
    macs = pruner.macs()
    pruner.prune(ratio=0.5)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    for k in (0, 1):
        feeds = exported.feeds(k)
        assert [a.shape for a in run(pruned, feeds)] == [a.shape for a in run(exported.load(), feeds)]
    assert pruner.macs() / macs <= max_macs


def test_onnx_in_refuses_opsets_below_7_with_the_supported_range():
    model = onnx.load(_path("zoo_opset7"))
    model.opset_import[0].version = 6
    with pytest.raises(Exception, match=r"opset 6 is not supported \(supported: 7\.\."):
        onnx_in.check_supported(model)


# ---- dynamic dims without ceremony -------------------------------------------------------------------------
def _audio(samples, seed=0):
    return {"audio": np.random.default_rng(seed).standard_normal((1, 1, samples)).astype(np.float32)}


def test_dims_the_default_stand_in_breaks_are_tried_larger_and_said_so(tmp_path):
    """A reflect pad of 16 needs more than the 8 stand-in samples: the model is analysed and validated at
    the first size that runs (32), the summary says so, and the pruned model still takes any length."""
    out = tmp_path / "out.onnx"
    done = _cli(_path("reflect_pad"), str(out), "--ratio", "0.5")
    assert done.returncode == 0, done.stderr
    assert ("input     dynamic dims samples analysed and validated at 32: the model does not run at the stand-in 8 "
            "(Pad reflect: pre-pad (16) exceeds maximum allowed (7)") in done.stdout
    pruned, original = onnx.load(str(out)), onnx.load(_path("reflect_pad"))
    assert [d.dim_param for d in pruned.graph.input[0].type.tensor_type.shape.dim] == ["batch", "", "samples"]
    for samples in (40, 300):
        assert run(pruned, _audio(samples))[0].shape == run(original, _audio(samples))[0].shape
    pruner = Pruner.load(_path("reflect_pad"), input_shapes={"audio": [1, 1, 32]})
    (group,) = pruner.prunable_groups()
    assert_group_oracle(pruner.depgraph, group, (0, 3, 5), _audio(32))


def test_dims_no_stand_in_runs_are_asked_for_in_one_line(tmp_path):
    out = tmp_path / "out.onnx"
    done = _cli(_path("reflect_pad_wide"), str(out), "--ratio", "0.5")
    assert done.returncode != 0 and not out.exists()
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert ("(its dynamic dims samples were tried at 8..2048); give their real sizes with --input-shape "
            "audio:1x1x<samples>") in done.stderr
    done = _cli(_path("reflect_pad_wide"), str(out), "--ratio", "0.5", "--input-shape", "audio:1x1x12000")
    assert done.returncode == 0, done.stderr


def test_input_shape_takes_trtexec_comma_lists_and_scalars(tmp_path):
    from onnxprune.options import parse_shapes
    assert parse_shapes(["x:1x2x20,gain:", "y:3"]) == {"x": [1, 2, 20], "gain": [], "y": [3]}
    with pytest.raises(Exception, match="NAME: for a scalar"):
        parse_shapes(["x:1x2x,gain"])
    out = tmp_path / "out.onnx"
    done = _cli(_path("scalar_gain"), str(out), "--ratio", "0.5", "--shapes", "x:1x2x20,gain:")
    assert done.returncode == 0, done.stderr
    assert "1 random feed (no batch axis)" in done.stdout  # a scalar input has no axis to stack samples on
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 2, 9)).astype(np.float32),
             "gain": np.asarray(0.7, np.float32)}
    assert run(onnx.load(str(out)), feeds)[0].shape == (2, 4, 9)
    pruner = Pruner.load(_path("scalar_gain"), input_shapes={"x": [1, 2, 20], "gain": []})
    (group,) = pruner.prunable_groups()
    assert_group_oracle(pruner.depgraph, group, (1, 2, 6), feeds)
