"""Sizes read at run time (Shape) that build or cut tensors: Expand, Slice, ConstantOfShape, Range, Tile.

Before these rules, pruning the tensor whose size was read changed what those ops built without
pruning them with it: onnxruntime refused the pruned model (a broadcast of 4 by 8) or, where the
counts happened to match, a ramp 0..C-1 silently became 0..C'-1. Static sizes are now pinned as
constants (the ops keep their meaning, or prune with the channels they are coupled to); a size
that stays a run-time value and reaches such an op makes the read axis a barrier naming that op."""
import numpy as np
import onnx
import pytest

from onnxprune import Pruner
from onnxprune.masking import mask_group
from onnxprune import onnx_out
from support import shape_reads
from support.builder import GraphBuilder
from support.oracle import prune_channels, run


def _feeds(model, batch, seed=0):
    rng = np.random.default_rng(seed)
    return {vi.name: rng.standard_normal([batch] + [d.dim_value for d in vi.type.tensor_type.shape.dim[1:]])
            .astype(np.float32) for vi in model.graph.input}


@pytest.mark.parametrize("case", shape_reads.CASES)
def test_pruning_the_read_tensor_or_the_other_branch_equals_zeroing(case):
    model = shape_reads.model(case)
    pruner = Pruner.from_model(model)
    dg = pruner.depgraph
    groups = dg.prunable_groups()
    read = dg.group_of("Conv_0")  # y: the tensor whose size is read
    other = dg.group_of("Conv_1")  # h: the other branch
    assert read in groups and other in groups and read is not other, [g.describe() for g in dg.groups]
    for group in groups:  # one group at a time, every other channel: sizes that follow the wrong group break
        channels = tuple(range(0, group.size, 2))
        pruned = prune_channels(dg, group, channels)
        masked = onnx_out.to_model(mask_group(dg, group, channels))
        for batch in (1, 3):  # the batch stays symbolic: its size is still read at run time
            feeds = _feeds(model, batch)
            for expected, actual in zip(run(masked, feeds), run(pruned, feeds)):
                assert expected.shape == actual.shape
                np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4, err_msg=group.describe())


def test_static_sizes_are_pinned_and_the_model_computes_the_same():
    for case in shape_reads.CASES:
        model = shape_reads.model(case)
        pruner = Pruner.from_model(model)
        assert any("pinned as constants" in note for note in pruner.notes), (case, pruner.notes)
        pinned = pruner.to_model()
        for batch in (1, 2):
            feeds = _feeds(model, batch)
            for a, b in zip(run(model, feeds), run(pinned, feeds)):
                np.testing.assert_array_equal(a, b)


def test_range_of_a_pruned_size_is_folded_and_keeps_the_kept_channels_values():
    """y + arange(y.size(1)): pruning y keeps each kept channel's own ramp value (not 0..C'-1)."""
    model = shape_reads.model("range_coupled")
    pruner = Pruner.from_model(model)
    assert not any(n.op_type == "Range" for n in pruner.graph.nodes)
    group = pruner.group_of("Conv_0")
    pruner.prune_group(group, [0, 1, 2])  # the first three: a wrong ramp would be off by 3 everywhere
    feeds = _feeds(model, 2)
    masked = onnx_out.to_model(mask_group(Pruner.from_model(model).depgraph, group, [0, 1, 2]))
    np.testing.assert_allclose(run(pruner.to_model(), feeds)[0], run(masked, feeds)[0], rtol=1e-4, atol=1e-4)


def _untraced_size_model(consumer):
    """y's channel count through Max (which static sizes are not followed through) into ``consumer``."""
    b = GraphBuilder(seed=3)
    x = b.input("input", ["N", 3, 4, 4])
    y = b.relu(b.conv(x, 6))
    h = b.relu(b.conv(x, 6))
    size = b.op("Max", [b.op("Gather", [b.op("Shape", [y]), b.const(np.array([1], np.int64))], axis=0),
                        b.const(np.array([1], np.int64))])
    if consumer == "ConstantOfShape":
        shape = b.op("Concat", [b.const(np.array([1], np.int64)), size, b.const(np.array([4, 4], np.int64))], axis=0)
        built = b.op("ConstantOfShape", [shape], value=onnx.helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [2.0]))
    elif consumer == "Range":
        ramp = b.op("Range", [b.const(np.array(0, np.int64)), b.op("Squeeze", [size, b.const(np.array([0]))]),
                              b.const(np.array(1, np.int64))])
        built = b.op("Reshape", [b.op("Cast", [ramp], to=onnx.TensorProto.FLOAT),
                                 b.const(np.array([1, -1, 1, 1], np.int64))])
    else:  # Expand
        shape = b.op("Concat", [b.const(np.array([1], np.int64)), size, b.const(np.array([4, 4], np.int64))], axis=0)
        built = b.op("Expand", [b.param((1, 1, 4, 4)), shape])
    z = b.op("Concat", [y, b.op("Mul", [h, built])], axis=1)
    out = b.op("Conv", [z, b.param((2, 12, 1, 1)), b.param((2,))], kernel_shape=[1, 1])
    b.output(b.rename(out, "output"))
    return b.build()


@pytest.mark.parametrize("consumer", ["ConstantOfShape", "Range", "Expand"])
def test_a_size_read_at_run_time_into_a_builder_is_a_barrier_naming_it(consumer):
    model = _untraced_size_model(consumer)
    pruner = Pruner.from_model(model)
    read = pruner.group_of("Conv_0")
    assert not read.prunable
    assert any(f"the size of axis 1 of Relu_0 is read at run time by {consumer} {consumer}_0" in r
               for r in read.blocked), read.blocked
    # the branch the built tensor joins does not prune through it either (the size it reads is y's)
    assert not pruner.group_of("Conv_1").prunable
