"""Validation: feeds, sessions, providers, latency, and every way a pruned model can fail."""
import numpy as np
import onnx
import pytest

from onnxprune import Pruner, validate as validate_module
from onnxprune.errors import InputError, ShapeError, ValidationError
from onnxprune.ir import Graph, ModelMeta, Value
from onnxprune.options import LatencyOptions
from onnxprune.validate import check, make_inputs, session, validate
from support.builder import GraphBuilder
from support.small_models import conv_chain

F32, I64, I32, BOOL, F16 = (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.INT32,
                            onnx.TensorProto.BOOL, onnx.TensorProto.FLOAT16)


def graph_with_inputs(*values, analysed=()):
    """A node-less Graph: make_inputs only reads the inputs (and analysed shapes in values)."""
    return Graph(nodes=[], inputs=list(values), outputs=[], params={}, values={v.name: v for v in analysed},
                 declared={}, meta=ModelMeta(8, {"": 17}))


def test_make_inputs_for_float_int_and_bool_inputs():
    graph = graph_with_inputs(Value("image", F32, (1, 3, 4, 4)), Value("half", F16, (2,)),
                              Value("ids", I64, (1, 5)), Value("lengths", I32, (3,)), Value("mask", BOOL, (1, 5)))
    feeds = make_inputs(graph)
    assert list(feeds) == ["image", "half", "ids", "lengths", "mask"]
    expected = {"image": (np.float32, (1, 3, 4, 4)), "half": (np.float16, (2,)), "ids": (np.int64, (1, 5)),
                "lengths": (np.int32, (3,)), "mask": (np.bool_, (1, 5))}
    for name, (dtype, shape) in expected.items():
        assert feeds[name].dtype == dtype and feeds[name].shape == shape, name
    assert feeds["image"].std() > 0.1  # random, not zeros
    assert set(np.unique(feeds["ids"]).tolist()) <= {0, 1}  # small ints: safe as indices
    for a, b in zip(make_inputs(graph, seed=1).values(), make_inputs(graph, seed=1).values()):
        np.testing.assert_array_equal(a, b)


def test_dynamic_batch_becomes_one():
    graph = graph_with_inputs(Value("x", F32, ("N", 3, 8, 8)), Value("y", F32, (None, 2)))
    feeds = make_inputs(graph)
    assert feeds["x"].shape == (1, 3, 8, 8) and feeds["y"].shape == (1, 2)


def test_analysed_shapes_win_over_declared_dynamic_dims():
    graph = graph_with_inputs(Value("x", F32, ("N", 3, "H", "W")), analysed=[Value("x", F32, (2, 3, 5, 5))])
    assert make_inputs(graph)["x"].shape == (2, 3, 5, 5)


def test_dynamic_spatial_dim_is_a_shape_error():
    graph = graph_with_inputs(Value("x", F32, ("N", 3, "H", 8)))
    with pytest.raises(ShapeError, match="x has dynamic dim 2.*--input-shape x:1x"):
        make_inputs(graph)


def test_inputs_from_npz(tmp_path):
    graph = graph_with_inputs(Value("x", F32, (1, 3)), Value("mask", BOOL, (1, 3)))
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    np.savez(tmp_path / "good.npz", x=x, mask=np.ones((1, 3), bool), extra=np.zeros(1))
    feeds = make_inputs(graph, str(tmp_path / "good.npz"))
    assert list(feeds) == ["x", "mask"]
    np.testing.assert_array_equal(feeds["x"], x)
    np.savez(tmp_path / "partial.npz", x=x)
    with pytest.raises(InputError, match="missing arrays for inputs mask"):
        make_inputs(graph, str(tmp_path / "partial.npz"))
    (tmp_path / "junk.npz").write_text("not an archive")
    with pytest.raises(InputError, match="cannot read"):
        make_inputs(graph, str(tmp_path / "junk.npz"))
    with pytest.raises(InputError, match="cannot read"):
        make_inputs(graph, str(tmp_path / "absent.npz"))


def test_cuda_without_cuda_is_a_clear_input_error(monkeypatch):
    monkeypatch.setattr(validate_module.ort, "get_available_providers",
                        lambda: ["CPUExecutionProvider"])
    with pytest.raises(InputError, match="--provider cuda: onnxruntime here has no CUDAExecutionProvider.*"
                                         "onnxruntime-gpu"):
        session(conv_chain(), "cuda")
    with pytest.raises(InputError, match="--provider tpu: choose from cpu, cuda"):
        session(conv_chain(), "tpu")


def test_cuda_provider_error_reaches_the_caller_of_validate(monkeypatch):
    monkeypatch.setattr(validate_module.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    pruner = Pruner.from_model(conv_chain())
    pruner.prune(ratio=0.5)
    with pytest.raises(InputError, match="cuda"):
        pruner.validate(provider="cuda", runs=1)


def test_validate_reports_success_and_latency():
    pruner = Pruner.from_model(conv_chain())
    pruner.prune(ratio=0.5)
    result = pruner.validate(runs=4, latency=LatencyOptions(min_runs=4, max_runs=4, threads=2))
    assert result.checker and result.onnxruntime and result.shapes_match
    assert result.output_shapes == {"output": [1, 10]}
    assert result.latency.runs == 4 and result.latency.threads == 2 and result.latency.provider == "cpu"
    assert result.latency_ms_before > 0 and result.latency_ms_after > 0
    assert result.latency_ratio == result.latency.ratio > 0  # the median of per-round ratios
    assert pruner.validate(runs=0).latency is None and pruner.validate(runs=0).latency_ms_before is None


def test_session_threads_are_fixed_only_when_asked():
    assert session(conv_chain(), threads=3).get_session_options().intra_op_num_threads == 3
    assert session(conv_chain(), threads=3).get_session_options().inter_op_num_threads == 3
    assert session(conv_chain()).get_session_options().intra_op_num_threads == 0  # onnxruntime's default


def bad_reshape_model():
    """Passes onnx.checker but fails in onnxruntime (48 elements reshaped to 50)."""
    b = GraphBuilder()
    x = b.input("input", [1, 3, 4, 4])
    b.output(b.rename(b.op("Reshape", [x, b.const(np.array([1, 50], np.int64))]), "output"))
    return b.build(check=False)


def identity_model(shape):
    b = GraphBuilder()
    x = b.input("input", [1, 3, 4, 4])
    b.output(b.rename(b.op("Reshape", [x, b.const(np.array(shape, np.int64))]), "output"))
    return b.build()


FEEDS = {"input": np.ones((1, 3, 4, 4), np.float32)}


def test_a_pruned_model_failing_in_onnxruntime_is_a_validation_error_without_log_noise(capfd):
    with pytest.raises(ValidationError, match="cannot run the pruned model"):
        validate(identity_model([1, 48]), bad_reshape_model(), FEEDS, runs=0)
    assert capfd.readouterr().err == ""  # onnxruntime's own error log stays quiet


def test_an_input_model_onnxruntime_cannot_load_is_an_input_error():
    """The original is run first: its own failure is bad input, never blamed on the pruned model."""
    broken = identity_model([1, 48])
    broken.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(InputError, match="cannot run the input model"):
        validate(broken, identity_model([1, 48]), FEEDS, runs=0)


def test_changed_output_shape_is_a_validation_error():
    with pytest.raises(ValidationError, match=r"output output changed shape: \(1, 48\) -> \(2, 24\)"):
        validate(identity_model([1, 48]), identity_model([2, 24]), FEEDS, runs=0)
    result = validate(identity_model([1, 48]), identity_model([1, 48]), FEEDS, runs=0)
    assert result.shapes_match and result.output_shapes == {"output": [1, 48]}


def test_checker_failures_are_validation_errors():
    model = identity_model([1, 48])
    model.graph.node[0].input[0] = "undefined_tensor"
    with pytest.raises(ValidationError, match="fails onnx.checker"):
        check(model)
    with pytest.raises(ValidationError, match="fails onnx.checker"):
        validate(identity_model([1, 48]), model, FEEDS, runs=0)
