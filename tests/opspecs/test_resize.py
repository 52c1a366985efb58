"""Resize / Upsample / Pad rules (opspecs/resize.py): channels pass where the op leaves axis 1 alone."""
import numpy as np
import pytest

from onnxprune.rules import IN, OUT
from support.builder import GraphBuilder
from support.oracle import assert_all_groups_oracle, depgraph, prune_channels
from support.protos import initializers as _inits, node as _node, check_runs as _check_runs


def _model(mid, opset=17, c=6):
    b = GraphBuilder(opset=opset, seed=1)
    x = b.conv(b.input("input", [1, 3, 4, 4]), c)
    y = mid(b, x)
    b.output(b.rename(b.conv(y, 3), "output"))
    return b.build()


def _roi(b, opset):
    """Resize-11 requires a roi input (an empty one is fine); later opsets take ''."""
    return b.const(np.array([], np.float32)) if opset < 13 else ""


# ---- Resize / Upsample ------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [11, 13, 19])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_with_scales(opset, mode):
    def mid(b, x):
        scales = b.const(np.array([1, 1, 2, 2], np.float32))
        return b.op("Resize", [x, _roi(b, opset), scales], mode=mode)

    model = _model(mid, opset)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Resize_0") and group.prunable and group.size == 6
    assert {e.port for e in group.ends if e.node == "Resize_0"} == {IN(0), OUT(0)}
    scales = _node(model, "Resize_0").input[2]
    assert scales not in {e.tensor for e in group.ends}
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 1])
    assert _inits(pruned)[scales].tolist() == [1, 1, 2, 2]
    _check_runs(model, pruned)


@pytest.mark.parametrize("opset", [11, 13, 19])
def test_resize_with_sizes_rewrites_the_channel_entry(opset):
    def mid(b, x):
        sizes = b.const(np.array([1, 6, 8, 8], np.int64))
        scales = b.const(np.array([], np.float32)) if opset < 13 else ""  # Resize-11: scales required too
        return b.op("Resize", [x, _roi(b, opset), scales, sizes], mode="nearest")

    model = _model(mid, opset)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Resize_0") and group.prunable and group.size == 6
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [2, 4, 5])
    assert _inits(pruned)[_node(pruned, "Resize_0").input[3]].tolist() == [1, 3, 8, 8]
    _check_runs(model, pruned)


def test_resize_with_sizes_and_spatial_axes_keeps_sizes():
    def mid(b, x):
        sizes = b.const(np.array([8, 8], np.int64))
        return b.op("Resize", [x, "", "", sizes], mode="nearest", axes=[2, 3])

    model = _model(mid, opset=19)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0])
    assert _inits(pruned)[_node(pruned, "Resize_0").input[3]].tolist() == [8, 8]
    _check_runs(model, pruned)


def test_resize_over_channels_is_a_barrier():
    def mid(b, x):
        scales = b.const(np.array([1, 2, 2, 2], np.float32))
        y = b.op("Resize", [x, "", scales], mode="nearest")
        return b.op("Slice", [y, b.const(np.array([0], np.int64)), b.const(np.array([6], np.int64)),
                              b.const(np.array([1], np.int64))])

    model = _model(mid)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert not group.prunable
    assert any("Resize Resize_0" in r and "resized" in r for r in group.blocked), group.blocked


def test_resize_opset10_scales_is_input_1():
    def mid(b, x):
        return b.op("Resize", [x, b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")

    model = _model(mid, opset=10)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Resize_0") and group.prunable
    assert_all_groups_oracle(model)
    _check_runs(model, prune_channels(dg, group, [1, 2]))


def test_upsample_opset9():
    def mid(b, x):
        return b.op("Upsample", [x, b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")

    model = _model(mid, opset=9)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Upsample_0") and group.prunable and group.size == 6
    assert_all_groups_oracle(model)
    _check_runs(model, prune_channels(dg, group, [3]))


# ---- Pad ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_spatial_only(mode):
    def mid(b, x):
        pads = b.const(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))
        extra = [b.const(np.array(0.5, np.float32))] if mode == "constant" else []
        return b.op("Pad", [x, pads] + extra, mode=mode)

    model = _model(mid)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group is dg.group_of("Pad_0") and group.prunable and group.size == 6
    pads = _node(model, "Pad_0").input[1]
    assert pads not in {e.tensor for e in group.ends}
    assert_all_groups_oracle(model)
    pruned = prune_channels(dg, group, [0, 5])
    assert _inits(pruned)[pads].tolist() == [0, 0, 1, 2, 0, 0, 2, 1]
    _check_runs(model, pruned)


def test_pad_opset9_attribute():
    model = _model(lambda b, x: b.op("Pad", [x], pads=[0, 0, 1, 1, 0, 0, 1, 1]), opset=9)
    dg = depgraph(model)
    assert dg.group_of("Pad_0").prunable
    assert_all_groups_oracle(model)


def test_pad_opset18_with_axes():
    def mid(b, x):
        return b.op("Pad", [x, b.const(np.array([1, 1, 1, 1], np.int64)), "",
                            b.const(np.array([2, 3], np.int64))])

    model = _model(mid, opset=18)
    dg = depgraph(model)
    assert dg.group_of("Pad_0").prunable
    assert_all_groups_oracle(model)


def test_pad_opset18_axes_naming_the_channel_axis_with_zero_pads():
    def mid(b, x):
        return b.op("Pad", [x, b.const(np.array([0, 1, 0, 1], np.int64)), "",
                            b.const(np.array([1, -1], np.int64))])

    model = _model(mid, opset=18)
    dg = depgraph(model)
    assert dg.group_of("Pad_0").prunable
    assert_all_groups_oracle(model)


@pytest.mark.parametrize("opset", [9, 13, 18])
def test_padding_on_the_channel_axis_is_a_barrier(opset):
    def mid(b, x):
        if opset < 11:
            y = b.op("Pad", [x], pads=[0, 1, 0, 0, 0, 1, 0, 0])
        elif opset < 18:
            y = b.op("Pad", [x, b.const(np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64))])
        else:
            y = b.op("Pad", [x, b.const(np.array([1, 0], np.int64)), "", b.const(np.array([1], np.int64))])
        return y

    model = _model(mid, opset=opset)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert not group.prunable
    assert any("Pad Pad_0" in r and "axis 1 is padded" in r for r in group.blocked), group.blocked
    assert dg.prunable_groups() == []


def _runtime_pad_model(pad_channels: bool):
    """conv (6) -> Pad with amounts computed at run time the way torch exports F.pad(x, (0, pad_w, 0, pad_h)) on a
    dynamic [1, C, h, w] (pad to a multiple of 4): its pairs last axis first, completed by ConstantOfShape zeros,
    reversed by Reshape / Slice(step -1) / Transpose / Reshape -> conv (3). ``pad_channels`` pads C by 1 too."""
    from onnx import TensorProto, helper
    b = GraphBuilder(opset=17, seed=2)
    x = b.input("input", [1, 3, 4, 4])
    b.inputs[0] = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])
    y = b.op("Conv", [x, b.param([6, 3, 3, 3]), b.param([6])], pads=[1, 1, 1, 1])
    shape = b.op("Shape", [y])

    def pad_to_4(axis):
        size = b.op("Gather", [shape, b.const(np.array(axis, np.int64))], axis=0)
        four = b.const(np.array(4, np.int64))
        return b.op("Unsqueeze", [b.op("Mod", [b.op("Sub", [four, b.op("Mod", [size, four])]), four]),
                                  b.const(np.array([0], np.int64))])

    zero = b.const(np.array([0], np.int64))
    one = b.const(np.array([1], np.int64))
    torch_pads = b.op("Concat", [zero, pad_to_4(3), zero, pad_to_4(2)] + ([one, one] if pad_channels else []), axis=0)
    rest = b.op("ConstantOfShape", [b.op("Sub", [b.const(np.array([8], np.int64)), b.op("Shape", [torch_pads])])],
                value=helper.make_tensor("value", TensorProto.INT64, [1], [0]))
    pairs = b.op("Reshape", [b.op("Concat", [torch_pads, rest], axis=0), b.const(np.array([-1, 2], np.int64))])
    reversed_ = b.op("Slice", [pairs, b.const(np.array([-1], np.int64)),
                               b.const(np.array([-9223372036854775807], np.int64)), zero,
                               b.const(np.array([-1], np.int64))])
    pads = b.op("Reshape", [b.op("Transpose", [reversed_], perm=[1, 0]), b.const(np.array([-1], np.int64))])
    y = b.op("Pad", [y, pads])
    b.output(b.rename(b.op("Conv", [y, b.param([3, 8 if pad_channels else 6, 3, 3])]), "output"))
    return b.build()


def test_pad_amounts_computed_at_run_time_pass_the_channels_they_do_not_pad():
    """Swin's window padding: only H and W get run-time amounts; the channel axis's are constant zeros."""
    from support.oracle import assert_group_oracle
    model = _runtime_pad_model(pad_channels=False)
    dg = depgraph(model)
    group = dg.group_of("Conv_0")
    assert group.prunable and group is dg.group_of("Pad_0") and group.size == 6
    for h, w in ((5, 7), (8, 8)):
        feeds = {"input": np.random.default_rng(h).standard_normal((1, 3, h, w)).astype(np.float32)}
        assert_group_oracle(dg, group, (1, 4), feeds)


def test_pad_amounts_of_the_channel_axis_are_still_read():
    dg = depgraph(_runtime_pad_model(pad_channels=True))
    assert not dg.group_of("Conv_0").prunable
    assert "Pad_0: axis 1 is padded" in dg.group_of("Conv_0").describe()
