"""Einsum (opspecs/einsum.py): letters couple axes across operands; a constant operand makes a linear layer.

Oracle: removing channels equals zeroing them in every coupled tensor.
"""
import numpy as np
import pytest

from onnxprune import Pruner
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph, run


def _mlp(first: str, second: str, x_shape):
    b = GraphBuilder(opset=17, seed=5)
    x = b.input("x", x_shape)
    h = b.op("Relu", [b.op("Add", [b.op("Einsum", [x, b.param([x_shape[-1], 24])], equation=first), b.param([24])])])
    b.output(b.op("Einsum", [h, b.param([24, 6])], equation=second))
    return b.build()


@pytest.mark.parametrize("first,second,shape", [
    ("bsh,hd->bsd", "bsd,de->bse", [2, 5, 8]),
    ("...h,hd->...d", "...d,de->...e", [2, 5, 8]),
    ("bh,hd->bd", "bd,de->be", [3, 8]),
])
def test_einsum_linear_layers_prune_like_matmuls(first, second, shape):
    model = _mlp(first, second, shape)
    dg = assert_all_groups_oracle(model, min_groups=1)
    assert [g.size for g in dg.prunable_groups()] == [24]
    pruner = Pruner.from_model(model)
    macs = pruner.macs()
    assert macs > 0
    pruner.prune(ratio=0.5)
    assert pruner.macs() == pytest.approx(macs / 2, rel=0.05)
    feeds = {"x": np.ones(shape, np.float32)}
    assert [o.shape for o in run(pruner.to_model(), feeds)] == [o.shape for o in run(model, feeds)]


def test_einsum_between_activations_couples_the_shared_letters():
    """Attention-like scores 'bhqd,bhkd->bhqk': heads couple across Q, K and the scores."""
    b = GraphBuilder(opset=17, seed=6)
    x = b.input("x", [1, 4, 16])
    q = b.op("Reshape", [b.op("MatMul", [x, b.param([16, 16])]), b.const(np.array([1, 4, 2, 8], np.int64))])
    k = b.op("Reshape", [b.op("MatMul", [x, b.param([16, 16])]), b.const(np.array([1, 4, 2, 8], np.int64))])
    scores = b.op("Einsum", [q, k], equation="bqhd,bkhd->bhqk")
    b.output(b.op("Softmax", [scores], axis=-1))
    dg = depgraph(b.build())
    group = dg.group_of("MatMul_0")
    assert group is dg.group_of("MatMul_1")  # Q and K projections couple through the contracted letters
    assert not any("Einsum" in reason for reason in group.blocked), group.blocked


def test_a_diagonal_einsum_is_a_barrier_with_its_reason():
    b = GraphBuilder(opset=17, seed=7)
    x = b.op("Relu", [b.op("MatMul", [b.input("x", [2, 8]), b.param([8, 8])])])
    b.output(b.op("Einsum", [x], equation="ii->i"))
    dg = depgraph(b.build())
    assert any("repeats a letter" in g.describe() for g in dg.groups)
