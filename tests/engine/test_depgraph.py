"""DependencyGraph: ends and edges in networkx, grouping, barriers, lookups."""
import numpy as np
import pytest

from onnxprune import Pruner, onnx_in
from onnxprune.depgraph import DependencyGraph, End
from onnxprune.mapping import Mapping, Modulo
from onnxprune.registry import Registry
from onnxprune.rules import Port
from support.builder import GraphBuilder
from support.small_models import conv_chain, residual, slice_halves


def dg_of(model, registry=None):
    return DependencyGraph(onnx_in.from_model(model), registry)


def test_networkx_graph_holds_ends_and_mapped_edges():
    dg = dg_of(conv_chain())
    assert dg.nx.number_of_nodes() > 0
    assert all(isinstance(e, End) for e in dg.nx.nodes)
    kinds = {d["kind"] for _, _, d in dg.nx.edges(data=True)}
    assert {"inter", "intra"} <= kinds
    assert all(isinstance(d["mapping"], Mapping) for _, _, d in dg.nx.edges(data=True))
    conv0_out = End("op", "Conv_0", (1,), "Conv_0", Port("out", 0))
    bn_in = End("op", "Conv_0", (1,), "BatchNormalization_0", Port("in", 0))
    assert dg.size(conv0_out) == 8
    # the tensor Conv_0 is shared by Conv_0's output and BN's input: an inter edge
    assert any(d["kind"] == "inter" for d in dg.nx.get_edge_data(conv0_out, bn_in).values())
    # Conv_1's input channels couple to its weight's axis 1 through a Modulo (grouped-conv aware)
    conv1_in = End("op", "Relu_0", (1,), "Conv_1", Port("in", 0))
    intra = [d["mapping"] for n in dg.nx.neighbors(conv1_in)
             for d in dg.nx.get_edge_data(conv1_in, n).values() if d["kind"] == "intra"]
    assert Modulo(8) in intra


def test_group_holds_every_coupled_parameter_with_matching_indices():
    dg = dg_of(conv_chain())
    group = dg.group_of("Conv_0")
    assert group.size == 8 and group.prunable
    params = {e.tensor: e.axes for e in group.ends if e.kind == "param"}
    graph = dg.graph
    conv0, bn, conv1 = (graph.node_by_name[n] for n in ("Conv_0", "BatchNormalization_0", "Conv_1"))
    expected = {conv0.inputs[1]: (0,), conv0.inputs[2]: (0,), conv1.inputs[1]: (1,)}
    expected.update({name: (0,) for name in bn.inputs[1:]})
    assert params == expected
    w1 = End("param", conv1.inputs[1], (1,))
    assert [ch[w1].tolist() for ch in group.channels] == [[k] for k in range(8)]
    assert group.indices(w1, [1, 5]).tolist() == [1, 5]


def test_group_of_node_and_channel():
    dg = Pruner.from_model(slice_halves()).depgraph  # folded: the Slices cut at channel 4
    first, second = dg.group_of("Conv_0", 0), dg.group_of("Conv_0", 5)
    assert first is not second and first is dg.group_of("Conv_0")
    assert first.size == second.size == 4
    out = End("op", "Conv_0", (1,), "Conv_0", Port("out", 0))
    assert first.indices(out, range(4)).tolist() == [0, 1, 2, 3]
    assert second.indices(out, range(4)).tolist() == [4, 5, 6, 7]
    with pytest.raises(KeyError):
        dg.group_of("Conv_0", 8)
    with pytest.raises(KeyError):
        dg.group_of("no_such_node")


def test_residual_add_puts_both_producers_in_one_group():
    dg = dg_of(residual())
    group = dg.group_of("Conv_0")
    assert dg.group_of("Conv_2") is group
    assert dg.group_of("Add_0") is group
    assert dg.group_of("Conv_1") is not group
    producers = {e.node for e in group.ends if e.kind == "op" and e.port == Port("out", 0)}
    assert {"Conv_0", "Conv_2", "Add_0"} <= producers
    assert group.prunable
    # and the rest are independent groups: conv_1 (4), Conv_3 (5, a graph output)
    assert sorted(g.size for g in dg.groups) == [4, 5, 8]


def test_graph_output_is_a_barrier_with_a_reason():
    dg = dg_of(conv_chain())
    head = dg.group_of("Gemm_0")
    assert not head.prunable and head.blocked == ["graph output output"]
    assert dg.barriers[End("output", "output", (1,))] == "graph output output"
    assert dg.blocked_groups() == [head]
    assert [g.id for g in dg.prunable_groups()] == [0, 1]
    assert "blocked: graph output output" in head.describe()


def model_with_input_residual_and_unknown_op():
    b = GraphBuilder(seed=3)
    x = b.input("input", [1, 4, 8, 8])
    y = b.op("Add", [b.conv(x, 4), x])  # the graph input joins Conv_0's group
    c = b.op("CumSum", [b.conv(y, 6), b.const(np.array(1, np.int64))])  # no rule for CumSum
    b.output(b.rename(b.conv(c, 2, k=1), "output"))
    return b.build()


def test_graph_input_and_ruleless_op_are_barriers_with_reasons():
    dg = dg_of(model_with_input_residual_and_unknown_op())
    assert dg.group_of("Conv_0").blocked == ["graph input input"]
    assert dg.barriers[End("input", "input", (1,))] == "graph input input"
    reason, = dg.group_of("Conv_1").blocked
    assert "CumSum_0" in reason and "no rule" in reason and "opset 17" in reason
    assert dg.prunable_groups() == []


def test_symbolic_spatial_dims_are_analysed_without_input_shape():
    b = GraphBuilder(seed=4)
    x = b.input("input", [1, 3, "H", "W"])
    b.output(b.rename(b.conv(b.relu(b.conv(x, 4)), 2), "output"))
    dg = dg_of(b.build())
    assert [g.size for g in dg.prunable_groups()] == [4]
    assert dg.graph.shape("Conv_0")[2].symbol == "H"


def test_a_channel_axis_with_a_run_time_size_is_a_barrier():
    b = GraphBuilder(seed=4)
    x = b.input("input", ["N", 4, 8])
    extra = b.input("extra", ["N", 4, "C"])
    h = b.op("Concat", [b.op("MatMul", [x, b.param((8, 5))]), extra], axis=2)
    b.output(b.rename(b.op("Relu", [h]), "output"))
    dg = dg_of(b.build())
    assert any("Concat_0 has a run-time size" in reason and "along axes [2]" in reason
               for reason in dg.barriers.values()), dg.barriers
    assert dg.prunable_groups() == []


def test_the_engine_knows_operators_only_through_the_registry():
    model = conv_chain()
    assert dg_of(model, Registry()).groups == []
    assert len(dg_of(model).groups) == 3


def test_groups_matching_selects_by_output_node_name():
    dg = dg_of(conv_chain())
    assert [g.id for g in dg.groups_matching(r"^Conv_0$")] == [0]
    assert [g.id for g in dg.groups_matching(r"Conv_")] == [0, 1]
    assert [g.id for g in dg.groups_matching(r"Batch")] == [0]  # BN's output is in Conv_0's group
    assert [g.id for g in dg.groups_matching(r"Relu")] == [0, 1]
    assert dg.groups_matching("nothing-like-this") == []


def test_groups_are_deterministic_and_ordered_by_graph_position():
    a, b = dg_of(residual()), dg_of(residual())
    assert [str(g.root) for g in a.groups] == [str(g.root) for g in b.groups]
    assert [g.id for g in a.groups] == list(range(len(a.groups)))
    roots = [g.root.node for g in a.groups]
    order = [n.name for n in a.graph.nodes]
    assert roots == sorted(roots, key=order.index)


def test_flatten_couples_one_channel_to_its_spatial_block():
    b = GraphBuilder(seed=5)
    x = b.relu(b.conv(b.input("input", [1, 3, 4, 4]), 3))
    flat = b.op("Flatten", [x], axis=1)
    b.output(b.rename(b.gemm(flat, 2), "output"))
    dg = dg_of(b.build())
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 3
    gemm_w = End("param", dg.graph.node_by_name["Gemm_0"].inputs[1], (1,))
    assert group.channels[1][gemm_w].tolist() == list(range(16, 32))


def test_channels_coupled_to_a_tensor_of_unknown_size_are_blocked():
    """If shape inference lost a tensor the rules couple to, its producer's group must not be pruned."""
    graph = onnx_in.from_model(conv_chain())
    relu_out = next(n for n in graph.nodes if n.op_type == "Relu").outputs[0]
    shape = graph.values[relu_out].shape
    graph.values[relu_out].shape = (shape[0], "unknown_channels") + tuple(shape[2:])
    dg = DependencyGraph(graph)
    group = dg.group_of("Conv_0")
    assert not group.prunable
    assert any(relu_out in reason for reason in group.blocked)
