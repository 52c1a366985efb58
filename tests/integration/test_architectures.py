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
    "inception": 8, "mobilenetv2": 9, "mobilenetv3": 9, "shufflenetv2": 5, "resnext": 6, "unet": 11,
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
