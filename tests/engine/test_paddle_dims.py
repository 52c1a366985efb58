"""Paddle exports declare a dynamic dim as -1: it is read as a symbol, not refused."""
from __future__ import annotations

import numpy as np
import onnx

from onnxprune.cli import main
from support.oracle import run
from support.small_models import conv_chain


def test_a_declared_minus_one_batch_prunes_to_a_valid_dynamic_model(tmp_path, capfd):
    model = conv_chain(batch=1)
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = -1
    path, out = tmp_path / "paddle.onnx", tmp_path / "out.onnx"
    onnx.save(model, str(path))
    code = main([str(path), str(out), "-q", "--ratio", "0.5"])
    assert code == 0, capfd.readouterr().err
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    batch = pruned.graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch.HasField("dim_value") and batch.dim_param
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    assert run(pruned, {"input": x})[0].shape == (3, 10)
