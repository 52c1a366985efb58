"""Ops without a rule, subgraph reads and graph outputs are barriers; the rest of the graph prunes."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.rules import IN
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph


def _unknown_op_model(op):
    b = GraphBuilder(seed=1)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    if op == "Trilu":
        y = b.op("Trilu", [x])
        b.output(b.rename(y, "output"))
    elif op == "TopK":
        values, indices = b.op("TopK", [x, b.const(np.array([2], np.int64))], n_out=2, axis=-1)
        b.output(b.rename(values, "output"))
        b.output(b.rename(indices, "indices"))
    elif op == "CumSum":
        y = b.op("CumSum", [x, b.const(np.array(1, np.int64))])
        b.output(b.rename(b.conv(y, 3), "output"))
    # a second, independent branch keeps a prunable group of its own
    z = b.relu(b.conv(b.input("other", [1, 3, 4, 4]), 5))
    b.output(b.rename(b.conv(z, 2), "output2"))
    return b.build()


@pytest.mark.parametrize("op", ["Trilu", "TopK", "CumSum"])
def test_op_without_rule_is_a_barrier_naming_the_op(op):
    model = _unknown_op_model(op)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert not group.prunable
    reasons = [r for r in group.blocked if f"{op} {op}_0" in r]
    assert reasons and f"no rule for {op} at opset 17" in reasons[0], group.blocked
    assert any(e.node == f"{op}_0" and e.port == IN(0) for e in group.ends)
    # the unrelated branch is unaffected
    other = dg.group_of(next(n.name for n in model.graph.node if n.input[0] == "other"))
    assert other.prunable and not other.blocked and other.size == 5
    assert dg.prunable_groups() == [other]
    assert_all_groups_oracle(model)


def test_op_without_rule_in_a_custom_known_domain_names_its_domain():
    b = GraphBuilder(seed=2)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    b.output(b.rename(b.conv(x, 3), "output"))
    model = b.build()
    model.graph.node.append(helper.make_node("Inverse", [x], ["inv"], name="Inverse_0", domain="com.microsoft"))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert not group.prunable
    assert any("no rule for com.microsoft::Inverse" in r for r in group.blocked), group.blocked


def _if_model(read_inside):
    b = GraphBuilder(opset=17, seed=3)
    x = b.conv(b.input("input", [1, 3, 4, 4]), 6)
    cond = b.input("cond", [], dtype=np.bool_)
    src = x if read_inside else b.relu(x)
    out_vi = [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [1, 6, 4, 4])]
    then = helper.make_graph([helper.make_node("Relu", [src], ["branch_out"])], "then", [], out_vi)
    other = helper.make_graph([helper.make_node("Neg", [src], ["branch_out"])], "else", [], out_vi)
    y = b.op("If", [cond], then_branch=then, else_branch=other)
    b.output(b.rename(b.conv(y, 3), "output"))
    return b.build()


def test_tensor_read_inside_if_subgraph_is_a_barrier():
    model = _if_model(read_inside=True)
    onnx.checker.check_model(model, full_check=True)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert not group.prunable
    assert any(r.startswith("Conv_0 crosses into subgraph If_0.else_branch, If_0.then_branch (If)")
               for r in group.blocked), group.blocked


def test_subgraph_read_of_a_downstream_tensor_blocks_its_whole_group():
    """The subgraph reads Relu(x), not x: the Relu output shares x's group, so the conv is blocked."""
    model = _if_model(read_inside=False)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Relu_0") and not group.prunable
    assert any(r.startswith("Relu_0 crosses into subgraph If_0.else_branch, If_0.then_branch (If)")
               for r in group.blocked), group.blocked


def test_graph_output_is_a_barrier_and_graph_input_is_no_root():
    b = GraphBuilder(seed=4)
    x = b.input("input", [1, 3, 4, 4])
    y = b.conv(x, 6)
    b.output(b.rename(y, "output"))
    dg = depgraph(b.build())
    group = dg.group_of("Conv_0")
    assert not group.prunable and group.blocked == ["graph output output"]
    assert len(dg.groups) == 1
