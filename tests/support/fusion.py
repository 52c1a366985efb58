"""What the fusion tests share: fuse a model as the CLI does, and the exactness oracle."""
from __future__ import annotations

import numpy as np
import onnx

from onnxprune.api import Pruner
from onnxprune.options import FuseOptions
from onnxprune.validate import check
from support.oracle import random_feeds, run


def fuse(model: onnx.ModelProto, kinds=None):
    """(fused model, pass result) of a model fused through the Pruner (as the CLI does)."""
    pruner = Pruner.from_model(model)
    result = pruner.fuse(FuseOptions(kinds) if kinds else None)
    fused = pruner.to_model()
    check(fused)
    return fused, result


def assert_exact(model, fused, rtol=1e-5, atol=1e-5, seed=0):
    feeds = random_feeds(model, seed)
    for expected, actual in zip(run(model, feeds), run(fused, feeds)):
        assert expected.shape == actual.shape
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]
