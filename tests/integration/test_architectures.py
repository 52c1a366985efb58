"""Every test architecture: the oracle for every group, and a full prune at ratio 0.5."""
import numpy as np
import onnx
import pytest

from onnxprune import Pruner
from support.architectures import ARCHITECTURES
from support.oracle import assert_all_groups_oracle, random_feeds, run

# (architecture, minimum prunable groups expected): a regression guard on coverage
MIN_GROUPS = {
    "plain_cnn": 3, "vgg_flatten_gemm": 4, "resnet_basic": 6, "resnet_bottleneck": 9, "densenet": 8,
    "inception": 8, "mobilenetv2": 9, "mobilenetv3": 9, "shufflenetv2": 8, "resnext": 6, "unet": 11,
    "yolo_neck": 40,
}
PLAIN_OR_RESIDUAL = ["plain_cnn", "vgg_flatten_gemm", "resnet_basic", "resnet_bottleneck", "resnext"]


def test_every_architecture_is_covered():
    assert set(MIN_GROUPS) == set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_oracle_every_group(name):
    assert_all_groups_oracle(ARCHITECTURES[name](), MIN_GROUPS[name])


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_prune_half_is_valid(name):
    model = ARCHITECTURES[name]()
    pruner = Pruner.from_model(model)
    macs_before = pruner.macs()
    pruner.prune(ratio=0.5)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_feeds(model)
    before, after = run(model, feeds), run(pruned, feeds)
    assert [b.shape for b in before] == [a.shape for a in after]
    assert all(np.isfinite(a).all() for a in after)
    assert pruner.macs() < macs_before
    if name in PLAIN_OR_RESIDUAL:
        assert pruner.macs() / macs_before <= 0.35, pruner.macs() / macs_before


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_oracle_at_newest_opset(name):
    newest = onnx.defs.onnx_opset_version()
    model = onnx.version_converter.convert_version(ARCHITECTURES[name](), newest)
    assert assert_all_groups_oracle(model, MIN_GROUPS[name]).graph.opset == newest


def test_opset9_cnn():
    """Opset 9: Upsample, attribute-style Clip and Slice, BatchNormalization-9."""
    from support.builder import GraphBuilder

    g = GraphBuilder(opset=9)
    x = g.input("input", [1, 3, 16, 16])
    y = g.relu(g.bn(g.conv(x, 8, bias=False)))
    y = g.op("Clip", [g.conv(y, 8)], min=0.0, max=6.0)
    y = g.op("Upsample", [y, g.const(np.asarray([1, 1, 2, 2], dtype=np.float32))], mode="nearest")
    y = g.op("Slice", [y], starts=[2], ends=[30], axes=[2])
    y = g.op("MaxPool", [g.conv(y, 8)], kernel_shape=[2, 2], strides=[2, 2])
    g.output(g.gemm(g.op("Flatten", [y], axis=1), 4))
    dg = assert_all_groups_oracle(g.build(), 3)
    assert dg.graph.opset == 9
