"""Loader and saver: what survives a round trip, what is refused, and how."""
import os

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxprune import Pruner, onnx_in, onnx_out
from onnxprune.errors import InputError, OptionError, UnsupportedModelError
from support.builder import GraphBuilder
from support.oracle import random_feeds, run
from support.small_models import conv_chain, custom_domain, save, with_opset

NEWEST = onnx.defs.onnx_opset_version()


def decorated_model():
    model = conv_chain()
    model.producer_name, model.producer_version = "pytorch", "2.13.0"
    model.doc_string, model.graph.doc_string = "model doc", "graph doc"
    model.domain, model.model_version = "org.example", 7
    model.graph.node[0].doc_string = "first conv"
    helper.set_model_props(model, {"author": "tests", "license": "Apache-2.0"})
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    return model


def test_round_trip_keeps_names_opsets_metadata_and_docs():
    model = decorated_model()
    out = onnx_out.to_model(onnx_in.from_model(model))
    assert [n.name for n in out.graph.node] == [n.name for n in model.graph.node]
    assert {(o.domain, o.version) for o in out.opset_import} == {("", 17), ("ai.onnx.ml", 3)}
    assert {p.key: p.value for p in out.metadata_props} == {"author": "tests", "license": "Apache-2.0"}
    assert (out.producer_name, out.producer_version) == ("pytorch", "2.13.0")
    assert (out.doc_string, out.graph.doc_string, out.graph.node[0].doc_string) == \
        ("model doc", "graph doc", "first conv")
    assert (out.domain, out.model_version, out.ir_version, out.graph.name) == \
        ("org.example", 7, model.ir_version, model.graph.name)
    assert [n.attribute for n in out.graph.node] == [n.attribute for n in model.graph.node]
    onnx.checker.check_model(out, full_check=True)
    feeds = random_feeds(model)
    np.testing.assert_array_equal(run(out, feeds)[0], run(model, feeds)[0])


def test_metadata_survives_pruning_and_saving(tmp_path):
    pruner = Pruner.from_model(decorated_model())
    pruner.prune(ratio=0.5)
    pruner.save(tmp_path / "p.onnx")
    out = onnx.load(str(tmp_path / "p.onnx"))
    assert out.producer_name == "pytorch" and out.doc_string == "model doc"
    assert {p.key for p in out.metadata_props} == {"author", "license"}
    assert out.graph.node[0].name == "Conv_0" and out.graph.node[0].doc_string == "first conv"


def test_model_with_external_data_loads_and_prunes(tmp_path):
    model = conv_chain()
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").stat().st_size > 0
    assert os.path.getsize(path) < 2000  # the weights really are outside
    pruner = Pruner.load(path)
    reference = conv_chain()  # onnx.save moved `model`'s weights out, so compare with a fresh copy
    np.testing.assert_array_equal(pruner.graph.params[pruner.graph.nodes[0].inputs[1]],
                                  onnx.numpy_helper.to_array(reference.graph.initializer[0]))
    pruner.prune(ratio=0.5)
    result = pruner.validate(runs=1)
    assert result.onnxruntime and result.shapes_match
    pruner.save(tmp_path / "out" / "pruned.onnx")
    pruned = onnx.load(str(tmp_path / "out" / "pruned.onnx"))
    assert run(pruned, random_feeds(reference))[0].shape == (1, 10)


def test_missing_external_data_is_an_input_error(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(conv_chain(), str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(InputError, match="external data"):
        onnx_in.load(path)


def test_saver_can_write_external_data_and_leaves_no_temp_files(tmp_path):
    model = onnx_out.to_model(onnx_in.from_model(conv_chain()))
    onnx_out.save(model, tmp_path / "m.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    again = onnx.load(str(tmp_path / "m.onnx"))
    assert run(again, random_feeds(again))[0].shape == (1, 10)
    size = (tmp_path / "m.onnx.data").stat().st_size
    onnx_out.save(onnx_out.to_model(onnx_in.from_model(conv_chain())), tmp_path / "m.onnx", external_data=True)
    assert (tmp_path / "m.onnx.data").stat().st_size == size  # overwritten, not appended to
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    onnx_out.save(onnx_out.to_model(onnx_in.from_model(conv_chain())), tmp_path / "m.onnx")  # embedded now
    embedded = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in embedded.graph.initializer)


@pytest.mark.parametrize("opset", [9, 13, NEWEST])
def test_supported_opsets_load_and_prune(opset):
    model = conv_chain(opset=opset)
    pruner = Pruner.from_model(model)
    assert pruner.graph.opset == opset
    assert len(pruner.prunable_groups()) == 2
    pruner.prune(ratio=0.5)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    assert pruned.opset_import[0].version == opset
    if opset <= 21:  # onnxruntime lags behind onnx's newest opset
        assert run(pruned, random_feeds(model))[0].shape == (1, 10)


@pytest.mark.parametrize("opset", [6, NEWEST + 1])
def test_unsupported_opsets_are_refused(opset):
    with pytest.raises(UnsupportedModelError, match=f"opset {opset} is not supported"):
        onnx_in.from_model(with_opset(conv_chain(opset=9), opset))


@pytest.mark.parametrize("opset", [7, 8])
def test_opsets_7_and_8_are_upgraded_by_the_version_converter_and_prune(tmp_path, opset):
    model = conv_chain(opset=opset)  # a genuine opset-7/8 model
    path = save(model, tmp_path / "old.onnx")
    pruner = Pruner.load(path)
    assert pruner.graph.opset == onnx_in.MIN_OPSET
    pruner.prune(ratio=0.5)
    pruned = pruner.to_model()
    onnx.checker.check_model(pruned, full_check=True)
    assert pruned.opset_import[0].version == onnx_in.MIN_OPSET
    feeds = random_feeds(model)
    assert run(pruned, feeds)[0].shape == run(model, feeds)[0].shape
    proto = onnx.load(str(path))
    assert onnx_in.check_supported(proto) == [f"opset {opset} upgraded to opset {onnx_in.MIN_OPSET} by onnx's "
                                              f"version converter (the output is opset {onnx_in.MIN_OPSET})"]


def test_custom_domains_are_refused_but_microsoft_ops_are_not():
    with pytest.raises(UnsupportedModelError, match="com.example.custom"):
        onnx_in.from_model(custom_domain())
    model = custom_domain()
    model.graph.node[1].domain = "com.microsoft"
    model.graph.node[1].op_type = "Gelu"
    model.opset_import[1].domain = "com.microsoft"
    graph = onnx_in.from_model(model)
    assert graph.nodes[1].domain == "com.microsoft"


def test_invalid_graph_is_an_input_error():
    model = conv_chain()
    model.graph.node[1].input[0] = "nowhere"
    with pytest.raises(InputError, match="invalid ONNX model"):
        onnx_in.from_model(model)


@pytest.mark.parametrize("content", [b"", b"hello, I am not an ONNX model\n", b"\x00\x01\x02garbage" * 10])
def test_unreadable_files_are_input_errors(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(InputError):
        onnx_in.read_model(path)


def test_truncated_file_and_paths_that_are_no_files(tmp_path):
    data = conv_chain().SerializeToString()
    (tmp_path / "half.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not an ONNX model or truncated"):
        onnx_in.read_model(tmp_path / "half.onnx")
    with pytest.raises(InputError, match="no such file"):
        onnx_in.read_model(tmp_path / "missing.onnx")
    with pytest.raises(InputError, match="not a file"):
        onnx_in.read_model(tmp_path)


def test_constant_nodes_become_params():
    b = GraphBuilder(seed=0)
    x = b.input("input", [1, 3, 4, 4])
    b.nodes.append(helper.make_node("Constant", [], ["scale"], name="the_constant",
                                    value=onnx.numpy_helper.from_array(np.full([1, 3, 1, 1], 2, np.float32))))
    b.nodes.append(helper.make_node("Constant", [], ["shape"], name="shape_constant", value_ints=[1, 48]))
    b._names.update({"scale", "shape"})
    y = b.op("Reshape", [b.op("Mul", [x, "scale"]), "shape"])
    b.output(b.rename(y, "output"))
    graph = onnx_in.from_model(b.build())
    assert [n.op_type for n in graph.nodes] == ["Mul", "Reshape"]
    assert graph.params["scale"].shape == (1, 3, 1, 1) and graph.params["scale"].dtype == np.float32
    assert graph.params["shape"].tolist() == [1, 48] and graph.params["shape"].dtype == np.int64
    out = onnx_out.to_model(graph)
    assert {"scale", "shape"} <= {t.name for t in out.graph.initializer}
    onnx.checker.check_model(out, full_check=True)


def test_unnamed_and_duplicate_node_names_become_unique():
    model = conv_chain()
    model.graph.node[0].name = ""
    model.graph.node[2].name = model.graph.node[3].name = "same"
    names = [n.name for n in onnx_in.from_model(model).nodes]
    assert len(set(names)) == len(names)
    assert names[0] == "Conv_0" and names[2:4] == ["same", "same__1"]


def test_input_shape_must_name_an_input_of_the_right_rank():
    model = conv_chain()
    with pytest.raises(OptionError, match="no input 'image'"):
        onnx_in.check_input_shapes(model, {"image": [1, 3, 8, 8]})
    with pytest.raises(OptionError, match="rank 2 given, model says 4"):
        onnx_in.from_model(model, {"input": [1, 3]})
    onnx_in.check_input_shapes(model, {"input": [2, 3, 8, 8]})


def test_input_shape_fixes_dynamic_dims_for_analysis_but_not_in_the_file():
    b = GraphBuilder(seed=0)
    x = b.input("input", ["N", 3, "H", "W"])
    b.output(b.rename(b.conv(b.relu(b.conv(x, 4)), 2), "output"))
    model = b.build()
    assert len(Pruner.from_model(model).prunable_groups()) == 1  # symbolic H, W need no --input-shape
    pruner = Pruner.from_model(model, {"input": [1, 3, 8, 8]})
    assert pruner.graph.values["Conv_0"].shape == (1, 4, 8, 8)
    assert len(pruner.prunable_groups()) == 1
    pruner.prune(ratio=0.5)
    out = pruner.to_model()
    assert [d.dim_param or d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim] == ["N", 3, "H", "W"]
    x = np.random.default_rng(0).standard_normal([2, 3, 5, 6]).astype(np.float32)
    assert run(out, {"input": x})[0].shape == (2, 2, 5, 6)


def test_dynamic_batch_is_analysed_as_one_and_stays_dynamic():
    model = conv_chain(batch="batch")
    pruner = Pruner.from_model(model)
    assert len(pruner.prunable_groups()) == 2
    pruner.prune(ratio=0.5)
    out = pruner.to_model()
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(0).standard_normal([3, 3, 8, 8]).astype(np.float32)
    assert run(out, {"input": x})[0].shape == (3, 10)
