"""A LLaMA-shaped decoder (scripts/make_llm.py) quantized to int4 by onnxruntime's own quantizer
(MatMulNBitsQuantizer: every projection and the LM head become com.microsoft MatMulNBits), pruned by
heads, MLP channels and hidden size: the pruned model is still int4 and onnxruntime runs it; pruning a
group of heads or MLP channels equals setting their codes to the zero point in the original."""
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune import Pruner, onnx_out
from onnxprune.masking import mask_group
from support.cli import call
from support.oracle import prune_channels, run
from support.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_llm.py"
BLOCK = 32


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    quantizer = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")
    make_llm = load_script("make_llm")
    folder = tmp_path_factory.mktemp("llm")
    cfg = make_llm.Config(hidden=128, layers=1, heads=4, kv_heads=2, mlp=256, vocab=64)
    make_llm.build(cfg, folder / "llm.onnx")
    q = quantizer.MatMulNBitsQuantizer(onnx.load(str(folder / "llm.onnx")), bits=4, block_size=BLOCK)
    q.process()
    path = folder / "llm_q4.onnx"
    onnx.save(q.model.model, str(path))
    return path


def _feeds(seed=0, batch=2, length=5):
    return {"input_ids": np.random.default_rng(seed).integers(0, 64, (batch, length)).astype(np.int64)}


def test_every_projection_is_int4_and_prunes_by_heads_mlp_and_hidden(quantized, tmp_path, capfd):
    model = onnx.load(str(quantized))
    assert sum(n.op_type == "MatMulNBits" for n in model.graph.node) == 8  # q, k, v, o, gate, up, down, lm_head
    code, _, err = call(capfd, [quantized, tmp_path / "out.onnx", "--ratio", "0.5", "--prune-hidden", "--runs", "0",
                                "-q", "--report", tmp_path / "r.json"])
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"heads", "channels", "hidden"} <= set(report["kinds"]), report["kinds"]
    assert report["macs_after"] < 0.4 * report["macs_before"]
    pruned = onnx.load(str(tmp_path / "out.onnx"))
    assert sum(n.op_type == "MatMulNBits" for n in pruned.graph.node) == 8
    ks = {n.name: {a.name: a.i for a in n.attribute} for n in pruned.graph.node if n.op_type == "MatMulNBits"}
    assert all(k["K"] % BLOCK == 0 and k["K"] < 256 for k in ks.values()), ks  # K shrank in whole blocks
    out = run(pruned, _feeds())[0]
    assert out.shape == (2, 5, 64) and np.isfinite(out).all()


@pytest.mark.parametrize("kind", ["heads", "channels"])
def test_pruning_heads_or_mlp_channels_equals_zero_point_codes(quantized, kind):
    pruner = Pruner.from_model(onnx.load(str(quantized)))
    dg = pruner.depgraph
    groups = [g for g in dg.prunable_groups() if g.kind == kind]
    assert groups, [g.describe() for g in dg.groups]
    group = groups[0]
    channels = tuple(range(0, group.size, 2))
    pruned = prune_channels(dg, group, channels)
    masked = onnx_out.to_model(mask_group(dg, group, channels))
    for seed, length in ((0, 5), (1, 9)):
        feeds = _feeds(seed, length=length)
        np.testing.assert_allclose(run(pruned, feeds)[0], run(masked, feeds)[0], rtol=1e-4, atol=1e-4)
