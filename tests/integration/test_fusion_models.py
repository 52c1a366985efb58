"""Fusion on every test architecture and on the exported Transformers: exact through
onnxruntime, alone and after pruning half the channels (``--ratio 0.5 --fuse``)."""
import numpy as np
import onnx
import pytest

from onnxprune import Pruner
from onnxprune.validate import check
from support.architectures import ARCHITECTURES
from support.exported import by_name
from support.oracle import random_feeds, run

# BatchNorms after convolutions, the least every architecture with them fuses (a coverage guard)
MIN_FUSED = {"plain_cnn": 3, "vgg_flatten_gemm": 0, "resnet_basic": 10, "resnet_bottleneck": 12, "densenet": 3,
             "inception": 8, "mobilenetv2": 16, "mobilenetv3": 10, "shufflenetv2": 13, "resnext": 8, "unet": 10,
             "yolo_neck": 41}
# exported models with something to fuse: Identity nodes (TorchScript), RMSNorm weights before the
# q/k/v and gate/up projections (the GELU's 0.5 before fc2 stays: onnxruntime fuses the whole GELU,
# tests/engine/test_fusion_gelu.py)
EXPORTED = {"bert_ts": 11, "gpt2_ts": 5, "llama_dynamo": 5, "llama_ts": 5, "swin_ts": 12, "vit_ts": 11}


def assert_same_outputs(expected, actual, tol=1e-4):
    assert [e.shape for e in expected] == [a.shape for a in actual]
    for e, a in zip(expected, actual):
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol * max(1.0, float(np.abs(e).max())))


def test_every_architecture_is_covered():
    assert set(MIN_FUSED) == set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_fusion_is_exact(name):
    model = ARCHITECTURES[name]()
    pruner = Pruner.from_model(model)
    nodes = len(pruner.graph.nodes)
    result = pruner.fuse()
    fused = pruner.to_model()
    check(fused)
    assert result.changed >= MIN_FUSED[name] and len(pruner.graph.nodes) == nodes - result.changed
    feeds = random_feeds(model)
    assert_same_outputs(run(model, feeds), run(fused, feeds))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_prune_half_then_fuse_is_valid_and_computes_the_pruned_model(name):
    model = ARCHITECTURES[name]()
    pruner = Pruner.from_model(model)
    pruner.prune(ratio=0.5)
    pruned = pruner.to_model()
    result = pruner.fuse()
    fused = pruner.to_model()
    check(fused)
    assert result.changed >= MIN_FUSED[name]
    feeds = random_feeds(model)
    assert_same_outputs(run(pruned, feeds), run(fused, feeds))
    assert [o.shape for o in run(model, feeds)] == [o.shape for o in run(fused, feeds)]


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_exported_models_fuse_exactly_at_two_lengths(name):
    exported = by_name(name)
    model = exported.load()
    pruner = Pruner.from_model(model)
    result = pruner.fuse()
    assert result.changed == EXPORTED[name], result.notes
    fused = pruner.to_model()
    check(fused)
    for which in (0, 1):
        feeds = exported.feeds(which)
        assert_same_outputs(run(model, feeds), run(fused, feeds))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_depth_ratio_fuse_and_removed_activations_stay_valid(name):
    """``--depth 1 --ratio 0.5 --fuse``, then ``--remove-activations 1``: every step a valid model with
    the original's output shapes; fusion computes exactly what depth and width left, and removing
    an activation equals that model with the activation replaced by the identity."""
    model = ARCHITECTURES[name]()
    pruner = Pruner.from_model(model)
    pruner.prune(ratio=0.5, depth=min(1, len(pruner.blocks().blocks)))
    pruned = pruner.to_model()
    pruner.fuse()
    fused = pruner.to_model()
    check(fused)
    feeds = random_feeds(model)
    assert_same_outputs(run(pruned, feeds), run(fused, feeds))
    done = pruner.remove_activations(1, pruner.random_inputs(8, 0))
    updp = pruner.to_model()
    check(updp)
    assert [o.shape for o in run(model, feeds)] == [o.shape for o in run(updp, feeds)]
    if done["removed"]:
        (removed,) = done["removed"]
        assert_same_outputs(run(_as_identity(fused, removed["node"]), feeds), run(updp, feeds))
        assert done["merged"] >= 1 and len(updp.graph.node) < len(fused.graph.node)


def _as_identity(model, name):
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    node = next(n for n in edited.graph.node if n.name == name)
    node.op_type, node.domain = "Identity", ""
    del node.attribute[:]
    del node.input[1:]
    return edited
