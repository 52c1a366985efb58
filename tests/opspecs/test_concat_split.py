"""Concat / Split / Slice rules (opspecs/concat_split.py): channels map by offset.

Channels that reach different ends form different groups: each Concat input,
each Split output, and the channels a Slice keeps vs. drops are groups of their own.
"""
import copy
import numpy as np
import onnx
import pytest

from onnxprune import onnx_out
from onnxprune.masking import mask_group
from onnxprune.plan import GroupDecision, Plan
from onnxprune.rewrite import apply_plan
from onnxprune.rules import IN, OUT
from support.builder import GraphBuilder
from support.oracle import (assert_all_groups_oracle, assert_group_oracle, depgraph, prune_channels,
                            random_feeds, run)
from support.protos import initializers as _inits, node as _node, const_input as _const_input


def _attrs(model, name):
    return {a.name: onnx.helper.get_attribute_value(a) for a in _node(model, name).attribute}


def _index_at(group, node, port):
    end = next(e for e in group.ends if e.node == node and e.port == port)
    return [c[end].tolist() if end in c else [] for c in group.channels]


def _picks(dg, node, channels, port=OUT(0)):
    """(group, group channel) pairs for the given channels of ``node``'s ``port``."""
    picks = {}
    for c in channels:
        group = dg.group_of(node, c, port)
        end = next(e for e in group.ends if e.node == node and e.port == port)
        k = next(k for k, ch in enumerate(group.channels) if c in ch.get(end, ()))
        picks.setdefault(group.id, []).append(k)
    return picks


def _prune_many(dg, node, channels, port=OUT(0)):
    """Remove ``node``'s channels through every group they fall in; check against masking."""
    picks = _picks(dg, node, channels, port)
    groups = [dg.groups[gid] for gid in sorted(picks)]
    plan = Plan(tuple(GroupDecision(g.id, str(g.root), g.size, tuple(picks[g.id])) for g in groups))
    pruned = onnx_out.to_model(apply_plan(dg, plan))
    onnx.checker.check_model(pruned, full_check=True)
    masked_graph = dg.graph
    for g in groups:  # mask_group reads dg.graph: mask group after group on a view of dg
        view = copy.copy(dg)
        view.graph = masked_graph
        masked_graph = mask_group(view, g, picks[g.id])
    feeds = random_feeds(onnx_out.to_model(dg.graph))
    for e, a in zip(run(onnx_out.to_model(masked_graph), feeds), run(pruned, feeds)):
        assert e.shape == a.shape
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)
    return pruned


# ---- Concat -------------------------------------------------------------------------------------
def _concat_model():
    b = GraphBuilder(seed=1)
    x = b.input("input", [1, 3, 6, 6])
    y = b.op("Concat", [b.relu(b.conv(x, 4)), b.relu(b.conv(x, 6))], axis=1)
    b.output(b.rename(b.conv(y, 5), "output"))
    return b.build()


def test_concat_two_producers_give_two_groups_with_offsets():
    model = _concat_model()
    dg = depgraph(model)
    first, second = dg.group_of("Conv_0"), dg.group_of("Conv_1")
    assert first is not second
    assert first.size == 4 and second.size == 6 and first.prunable and second.prunable
    assert _index_at(first, "Concat_0", OUT(0)) == [[0], [1], [2], [3]]
    assert _index_at(second, "Concat_0", OUT(0)) == [[4], [5], [6], [7], [8], [9]]
    assert _index_at(second, "Conv_2", IN(0)) == [[4], [5], [6], [7], [8], [9]]
    assert len(dg.prunable_groups()) == 2
    assert_all_groups_oracle(model, min_groups=2)


def test_concat_consumer_weight_is_sliced_at_the_offset():
    model = _concat_model()
    dg = depgraph(model)
    pruned = prune_channels(dg, dg.group_of("Conv_1"), [0, 5])
    w = _const_input(model, "Conv_2", 1)
    np.testing.assert_array_equal(_const_input(pruned, "Conv_2", 1), w[:, [0, 1, 2, 3, 5, 6, 7, 8]])
    assert _const_input(pruned, "Conv_1", 1).shape[0] == 4
    assert _const_input(pruned, "Conv_0", 1).shape[0] == 4
    feeds = random_feeds(model)
    assert_group_oracle(dg, dg.group_of("Conv_1"), [0, 5], feeds)
    assert_group_oracle(dg, dg.group_of("Conv_0"), [3], feeds)


def test_concat_on_batch_axis_same_width():
    b = GraphBuilder(seed=2)
    x = b.input("input", [1, 3, 6, 6])
    y = b.op("Concat", [b.conv(x, 5), b.conv(x, 5)], axis=0)
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Conv_1") and group.size == 5 and group.prunable
    assert_all_groups_oracle(model)


def test_concat_of_a_tensor_with_itself():
    b = GraphBuilder(seed=8)
    x = b.relu(b.conv(b.input("input", [1, 3, 6, 6]), 4))
    b.output(b.rename(b.conv(b.op("Concat", [x, x], axis=1), 3), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 4
    assert _index_at(group, "Concat_0", OUT(0)) == [[k, k + 4] for k in range(4)]
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [1])
    w = _const_input(model, "Conv_1", 1)
    np.testing.assert_array_equal(_const_input(pruned, "Conv_1", 1), w[:, [0, 2, 3, 4, 6, 7]])


def test_concat_with_a_graph_input_blocks_only_that_piece():
    b = GraphBuilder(seed=3)
    x = b.input("input", [1, 3, 6, 6])
    y = b.op("Concat", [x, b.conv(x, 6)], axis=1)
    b.output(b.rename(b.conv(y, 4), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 6
    assert _index_at(group, "Conv_1", IN(0)) == [[3], [4], [5], [6], [7], [8]]
    assert_all_groups_oracle(model)


# ---- Split ---------------------------------------------------------------------------------------
def _split_model(opset, sizes, how):
    b = GraphBuilder(opset=opset, seed=4)
    x = b.conv(b.input("input", [1, 3, 6, 6]), sum(sizes))
    if how == "attr":
        parts = b.op("Split", [x], n_out=len(sizes), axis=1, split=list(sizes))
    elif how == "input":
        parts = b.op("Split", [x, b.const(np.array(sizes, np.int64))], n_out=len(sizes), axis=1)
    elif how == "num_outputs":
        parts = b.op("Split", [x], n_out=len(sizes), axis=1, num_outputs=len(sizes))
    else:  # equal split, no sizes given
        parts = b.op("Split", [x], n_out=len(sizes), axis=1)
    ys = [b.conv(p, 3) for p in parts]
    b.output(b.rename(b.op("Sum", ys), "output"))
    return b.build()


def _split_sizes(model):
    node = _node(model, "Split_0")
    attrs = _attrs(model, "Split_0")
    if "split" in attrs:
        return list(attrs["split"])
    if len(node.input) > 1 and node.input[1]:
        return _inits(model)[node.input[1]].tolist()
    return None


SPLITS = [
    (11, [3, 5], "attr"),
    (11, [4, 4], "equal"),
    (13, [3, 5], "input"),
    (13, [4, 4], "equal"),
    (18, [4, 4], "num_outputs"),
    (18, [3, 5], "input"),
]


@pytest.mark.parametrize("opset,sizes,how", SPLITS)
def test_split_gives_one_group_per_piece(opset, sizes, how):
    model = _split_model(opset, sizes, how)
    dg = depgraph(model)
    first, second = dg.group_of("Split_0", port=OUT(0)), dg.group_of("Split_0", port=OUT(1))
    assert first is not second and first.prunable and second.prunable
    assert (first.size, second.size) == tuple(sizes)
    assert first is dg.group_of("Conv_0", 0) and second is dg.group_of("Conv_0", sum(sizes) - 1)
    assert _index_at(first, "Conv_0", OUT(0)) == [[k] for k in range(sizes[0])]
    assert _index_at(second, "Conv_0", OUT(0)) == [[sizes[0] + k] for k in range(sizes[1])]
    assert _index_at(second, "Split_0", OUT(1)) == [[k] for k in range(sizes[1])]
    assert_all_groups_oracle(model, min_groups=2)


@pytest.mark.parametrize("opset,sizes,how", SPLITS)
@pytest.mark.parametrize("removed", [[1, 6], [0, 1], [5, 6, 7]])
def test_split_sizes_are_rewritten(opset, sizes, how, removed):
    model = _split_model(opset, sizes, how)
    dg = depgraph(model)
    pruned = _prune_many(dg, "Conv_0", removed)  # checker full_check + oracle
    bounds = np.cumsum([0] + sizes)
    expected = [sizes[i] - sum(bounds[i] <= r < bounds[i + 1] for r in removed) for i in range(len(sizes))]
    got = _split_sizes(pruned)
    attrs = _attrs(pruned, "Split_0")
    if got is None:  # sizes left implicit: only valid when the pieces stay equal
        assert len(set(expected)) == 1
    else:
        assert got == expected
        assert "num_outputs" not in attrs  # the split input and num_outputs are exclusive
    inferred = onnx.shape_inference.infer_shapes(pruned, strict_mode=True)
    dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in inferred.graph.value_info}
    assert [dims[o][1] for o in _node(pruned, "Split_0").output] == expected


def test_split_uneven_num_outputs_three_pieces():
    """num_outputs=3 over 7 channels gives [3, 3, 1]; pruning an uneven result needs explicit sizes."""
    b = GraphBuilder(opset=18, seed=9)
    x = b.conv(b.input("input", [1, 3, 6, 6]), 7)
    parts = b.op("Split", [x], n_out=3, axis=1, num_outputs=3)
    b.output(b.rename(b.op("Concat", [b.conv(p, 2) for p in parts], axis=1), "output"))
    model = b.build()
    dg = depgraph(model)
    assert [dg.group_of("Split_0", port=OUT(i)).size for i in range(3)] == [3, 3, 1]
    assert not dg.group_of("Split_0", port=OUT(2)).prunable  # one channel: nothing to remove
    assert_all_groups_oracle(model, min_groups=2)
    pruned = _prune_many(dg, "Conv_0", [4])
    assert _split_sizes(pruned) == [3, 2, 1] and "num_outputs" not in _attrs(pruned, "Split_0")
    pruned = _prune_many(dg, "Conv_0", [0, 5])
    assert _split_sizes(pruned) == [2, 2, 1]


def test_split_on_another_axis_passes_channels_through():
    b = GraphBuilder(opset=13, seed=5)
    x = b.conv(b.input("input", [1, 3, 6, 6]), 5)
    top, bottom = b.op("Split", [x, b.const(np.array([2, 4], np.int64))], n_out=2, axis=2)
    b.output(b.rename(b.op("Concat", [b.conv(top, 3), b.conv(bottom, 3)], axis=2), "output"))
    model = b.build()
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group.size == 5
    assert group is dg.group_of("Split_0", port=OUT(0)) is dg.group_of("Split_0", port=OUT(1))
    assert _index_at(group, "Split_0", OUT(1)) == [[k] for k in range(5)]
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [2])
    assert _split_sizes(pruned) == [2, 4]


def test_split_with_runtime_sizes_is_a_barrier():
    b = GraphBuilder(opset=13, seed=6)
    x = b.conv(b.input("input", [1, 3, 6, 6]), 8)
    sizes = b.op("Concat", [b.const(np.array([3], np.int64)), b.const(np.array([5], np.int64))], axis=0)
    parts = b.op("Split", [x, sizes], n_out=2, axis=1)
    # shape inference cannot see through the Concat either: the pieces' widths are unknown
    ys = [b.op("Conv", [p, b.param((3, c, 1, 1))]) for p, c in zip(parts, (3, 5))]
    b.output(b.rename(b.op("Sum", ys), "output"))
    model = b.build(check=False)
    for d in (1, 3, 6, 6):
        model.graph.output[0].type.tensor_type.shape.dim.add().dim_value = d
    dg = depgraph(model)
    blocked = dg.group_of("Conv_0").blocked
    assert any("Split Split_0" in r and ("run time" in r or "unknown" in r) for r in blocked), blocked
    assert dg.prunable_groups() == []


# ---- Slice ---------------------------------------------------------------------------------------
def _slice_model(opset, starts, ends, axes=(1,), steps=None, c=8):
    b = GraphBuilder(opset=opset, seed=7)
    x = b.conv(b.input("input", [1, 3, 6, 6]), c)
    if opset < 10:
        y = b.op("Slice", [x], starts=list(starts), ends=list(ends), axes=list(axes))
    else:
        ins = [x, b.const(np.array(starts, np.int64)), b.const(np.array(ends, np.int64)),
               b.const(np.array(axes, np.int64))]
        if steps is not None:
            ins.append(b.const(np.array(steps, np.int64)))
        y = b.op("Slice", ins)
    b.output(b.rename(b.conv(y, 4), "output"))
    return b.build()


def _slice_bounds(model):
    attrs = _attrs(model, "Slice_0")
    if "starts" in attrs:
        return [list(attrs["starts"]), list(attrs["ends"])]
    return [_const_input(model, "Slice_0", 1).tolist(), _const_input(model, "Slice_0", 2).tolist()]


@pytest.mark.parametrize("opset", [9, 13])
def test_slice_on_channel_axis_maps_by_offset(opset):
    model = _slice_model(opset, [2], [7])
    dg = depgraph(model)
    kept = dg.group_of("Slice_0")
    assert kept.prunable and kept.size == 5
    assert _index_at(kept, "Conv_0", OUT(0)) == [[2], [3], [4], [5], [6]]
    assert _index_at(kept, "Slice_0", OUT(0)) == [[k] for k in range(5)]
    assert _index_at(kept, "Conv_1", IN(0)) == [[k] for k in range(5)]
    # the channels the Slice drops are a group of their own: dead channels, free to remove
    dropped = dg.group_of("Conv_0", 0)
    assert dropped is not kept and dropped.prunable
    assert _index_at(dropped, "Conv_0", OUT(0)) == [[0], [1], [7]]
    assert not any(e.node == "Conv_1" for e in dropped.ends)
    assert_all_groups_oracle(model, min_groups=2)


@pytest.mark.parametrize("opset", [9, 13])
@pytest.mark.parametrize("removed,bounds,width", [
    ([0, 1], ([0], [5]), 5),        # only channels before the slice: start shifts
    ([7], ([2], [7]), 5),           # only after: unchanged
    ([0, 3, 7], ([1], [5]), 4),     # before, inside, after
    ([2, 6], ([2], [5]), 3),        # both edges of the slice
])
def test_slice_bounds_are_rewritten(opset, removed, bounds, width):
    model = _slice_model(opset, [2], [7])
    dg = depgraph(model)
    pruned = _prune_many(dg, "Conv_0", removed)
    assert _slice_bounds(pruned) == [list(bounds[0]), list(bounds[1])]
    assert _const_input(pruned, "Conv_1", 1).shape[1] == width
    assert _const_input(pruned, "Conv_0", 1).shape[0] == 8 - len(removed)


def test_slice_with_negative_and_open_bounds():
    model = _slice_model(13, [-6], [np.iinfo(np.int64).max])
    dg = depgraph(model)
    kept = dg.group_of("Slice_0")
    assert _index_at(kept, "Conv_0", OUT(0)) == [[k] for k in range(2, 8)]
    feeds = random_feeds(model)
    for removed in ([0], [2, 5], [1, 7]):
        pruned = _prune_many(dg, "Conv_0", removed)
        assert run(pruned, feeds)[0].shape == (1, 4, 6, 6)


def test_slice_on_spatial_axis_passes_channels_through():
    model = _slice_model(13, [1], [5], axes=(2,))
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Slice_0") and group.prunable and group.size == 8
    assert _index_at(group, "Slice_0", OUT(0)) == [[k] for k in range(8)]
    assert_all_groups_oracle(model)
    assert _slice_bounds(prune_channels(dg, group, [0, 1])) == [[1], [5]]


def test_strided_slice_on_channel_axis_is_a_barrier():
    model = _slice_model(13, [0], [8], steps=[2])
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert not group.prunable
    assert any("strided Slice" in r for r in group.blocked), group.blocked
    assert dg.prunable_groups() == []


def test_strided_slice_on_spatial_axis_is_fine():
    model = _slice_model(13, [0], [6], axes=(3,), steps=[2])
    dg = depgraph(model)
    assert dg.group_of("Conv_0").prunable
    assert_all_groups_oracle(model)
