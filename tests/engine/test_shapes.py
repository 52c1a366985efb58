"""Shape analysis: onnxruntime's (slow) symbolic inference runs only where onnx's leaves holes."""
from __future__ import annotations

from onnxprune import onnx_in, shapes
from support.small_models import conv_chain
from support.symbolic_runs import count_symbolic_runs


def test_static_and_batch_symbolic_cnns_need_no_symbolic_inference(monkeypatch):
    calls = count_symbolic_runs(monkeypatch)
    for batch in (1, "N"):
        graph = onnx_in.from_model(conv_chain(batch=batch))
        assert tuple(int(d) for d in graph.shape("output")) == (1, 10)
    assert calls == []


def test_symbols_onnx_invents_send_the_model_to_symbolic_inference(monkeypatch):
    import onnx
    from pathlib import Path
    calls = count_symbolic_runs(monkeypatch)
    model = onnx.load(str(Path(__file__).resolve().parents[1] / "models" / "bert_ts.onnx"))
    graph = onnx_in.from_model(model)
    assert calls, "BERT's run-time Reshape targets need onnxruntime's symbolic inference"
    assert any(isinstance(d, int) and d > 1 for v in graph.values.values() if v.shape for d in v.shape)


def test_a_symbol_has_one_stand_in_in_every_input():
    """x [nodes, 8] and adj [nodes, nodes]: ``nodes`` is not a leading-only (batch) dim, so it takes
    the sequence stand-in in both; a user's shape for one input fixes the symbol for the others."""
    from onnx import TensorProto, helper
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["nodes", 8]),
              helper.make_tensor_value_info("adj", TensorProto.FLOAT, ["nodes", "nodes"]),
              helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq", None])]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["adj", "x"], ["y"])], "g", inputs, [out]))
    s = shapes.SEQUENCE_STAND_IN
    assert shapes.stand_ins(model, None) == {"x": [s, 8], "adj": [s, s], "ids": [1, s, s]}
    assert shapes.stand_ins(model, {"x": [5, 8]}) == {"x": [5, 8], "adj": [5, 5], "ids": [1, s, s]}


def test_symbolic_inference_does_not_import_torch():
    """onnxruntime.tools' __init__ imports torch where installed (7-13 s a load): the symbolic
    inference module is loaded from its file alone. Run in a fresh interpreter (the suite may hold torch)."""
    import subprocess
    import sys
    from pathlib import Path
    bert = Path(__file__).resolve().parents[1] / "models" / "bert_ts.onnx"
    code = ("import sys, onnx\nfrom onnxprune import onnx_in, shapes\ncalls = []\nreal = shapes._ort_infer\n"
            "shapes._ort_infer = lambda m: calls.append(1) or real(m)\n"
            f"onnx_in.from_model(onnx.load({str(bert)!r}))\n"
            "assert calls, 'symbolic inference did not run'\n"
            "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_ops_no_inference_knows_are_observed_not_guessed():
    """onnxruntime's symbolic inference types outputs of com.microsoft ops it has no handler for (QLinearConcat,
    QLinearAveragePool) as float scalars, and infers what reads them from that; those are holes, observed by
    running the model."""
    import os

    import onnx
    from support.exported import MODELS_DIR
    model = onnx.load(os.path.join(MODELS_DIR, "realworld", "qlinear_contrib.onnx"))
    found, _ = shapes.analysis_shapes(model)
    assert found["joined"] == (onnx.TensorProto.UINT8, (1, 24, 16, 16))
    assert found["pool"] == (onnx.TensorProto.UINT8, (1, 24, 8, 8))
    assert found["features"] == (onnx.TensorProto.FLOAT, (1, 10, 8, 8))
