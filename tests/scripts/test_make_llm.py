"""scripts/make_llm.py: a LLaMA-shaped decoder that onnxruntime runs at any batch and length (causally),
sized as asked, and that onnxprune prunes by heads, MLP channels and hidden size, external data kept."""
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from support.cli import call
from support.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_llm.py"


@pytest.fixture(scope="module")
def make_llm():
    module = load_script("make_llm")
    return module


@pytest.mark.parametrize("target", ["10M", "100M", "1B"])
def test_sizes_are_close_to_the_target(make_llm, target):
    cfg = make_llm.config_for(make_llm.parse_count(target))
    assert 0.8 < cfg.params / make_llm.parse_count(target) < 1.25
    assert cfg.heads % cfg.kv_heads == 0 and cfg.heads // cfg.kv_heads == 4 and cfg.hidden == 64 * cfg.heads


def test_the_decoder_runs_causally_and_prunes_by_heads_mlp_and_hidden(make_llm, tmp_path, capfd):
    cfg = make_llm.Config(hidden=256, layers=2, heads=4, kv_heads=1, mlp=512, vocab=64)
    make_llm.build(cfg, tmp_path / "llm.onnx")
    data = tmp_path / "llm.onnx.data"
    stored = onnx.load(str(tmp_path / "llm.onnx"), load_external_data=False)
    params = sum(int(np.prod(t.dims)) for t in stored.graph.initializer if t.name.endswith(".weight"))
    assert params == cfg.params
    assert data.stat().st_size >= 4 * (cfg.params - (2 * cfg.layers + 1) * cfg.hidden)  # weights external
    session = ort.InferenceSession(str(tmp_path / "llm.onnx"))
    ids = np.random.default_rng(0).integers(0, cfg.vocab, (2, 7))
    (full,) = session.run(None, {"input_ids": ids})
    (prefix,) = session.run(None, {"input_ids": ids[:1, :4]})
    assert full.shape == (2, 7, cfg.vocab) and np.isfinite(full).all()
    np.testing.assert_allclose(prefix[0], full[0, :4], rtol=1e-4, atol=1e-4)  # later tokens change nothing before
    code, _, err = call(capfd, [tmp_path / "llm.onnx", tmp_path / "out.onnx", "--ratio", "0.5", "--prune-hidden",
                                "--runs", "0", "-q", "--round-to", "1", "--report", tmp_path / "r.json"])
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"heads", "channels", "hidden"} <= set(report["kinds"]), report["kinds"]
    assert report["params_after"] < 0.6 * report["params_before"]
    assert (tmp_path / "out.onnx.data").is_file()
    pruned = ort.InferenceSession(str(tmp_path / "out.onnx"))
    assert pruned.run(None, {"input_ids": ids})[0].shape == full.shape
