"""A layer whose weight is computed from constants alone (behind Transpose, Cast) is a linear layer."""
import numpy as np
import pytest

from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle


@pytest.mark.parametrize("via", ["Transpose", "Cast"])
def test_matmul_weight_behind_a_constant_op_prunes(via):
    b = GraphBuilder(opset=17, seed=8)
    x = b.input("x", [2, 5, 8])
    if via == "Transpose":  # stored (out, in), as torch keeps Linear weights
        w = b.op("Transpose", [b.param([24, 8])], perm=[1, 0])
    else:  # stored in fp16, computed in fp32
        w = b.op("Cast", [b.const(np.random.default_rng(1).standard_normal([8, 24]).astype(np.float16))],
                 to=1)
    h = b.op("Relu", [b.op("MatMul", [x, w])])
    b.output(b.op("MatMul", [h, b.param([24, 4])]))
    dg = assert_all_groups_oracle(b.build(), min_groups=1)
    assert [g.size for g in dg.prunable_groups()] == [24]
