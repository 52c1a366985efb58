"""Reading test models back: initializers, nodes, constant inputs, and a run check."""
import numpy as np
from onnx import numpy_helper

from support.oracle import random_feeds, run


def initializers(model) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def const_input(model, name, slot):
    return initializers(model)[node(model, name).input[slot]]


def check_runs(model, pruned):
    """The pruned model runs in onnxruntime, with the original's output shapes and finite values."""
    feeds = random_feeds(model)
    after = run(pruned, feeds)
    assert [a.shape for a in after] == [b.shape for b in run(model, feeds)]
    assert all(np.isfinite(a).all() for a in after)
