"""Property test: random small valid graphs keep the contract (tests/support/random_graphs.py).

CI runs PROPERTY_GRAPHS graphs (every RERUN_EVERY-th is run twice for
byte-identical output) and a few dozen damaged ones; set ONNXPRUNE_PROPERTY_N
for more, or run ``python scripts/fuzz.py --n 2000``.
"""
import os

import pytest

from onnxprune.cli import main
from onnxprune.rules import STRICT_ENV
from support.random_graphs import check_contract, check_corrupted

PROPERTY_GRAPHS = int(os.environ.get("ONNXPRUNE_PROPERTY_N", "150"))
RERUN_EVERY = 4
CORRUPTED = 60
# damaged models scripts/fuzz.py once failed on (a negative dim, non-UTF-8 strings, a weight that no longer
# fits its group count, an unknown tensor data type, declared shapes that contradict the weights): regressions
FUZZ_REGRESSIONS = (1367, 3011, 3164, 3760, 3902, 4309, 5076)


@pytest.fixture
def run_cli(capfd):
    def run(args):
        code = main([str(a) for a in args])
        out, err = capfd.readouterr()
        return code, out, err
    return run


def test_random_valid_graphs_keep_the_contract(tmp_path, run_cli):
    outcomes = [check_contract(seed, run_cli, tmp_path, rerun=seed % RERUN_EVERY == 0)
                for seed in range(PROPERTY_GRAPHS)]
    problems = [(o.seed, p) for o in outcomes for p in o.problems]
    assert not problems, problems[:10]
    pruned = sum(o.code == 0 for o in outcomes)
    nothing = sum(o.code == 3 for o in outcomes)
    assert pruned + nothing == PROPERTY_GRAPHS
    assert pruned >= PROPERTY_GRAPHS * 0.6, (pruned, nothing)  # the generator makes prunable graphs


def test_damaged_models_fail_in_one_line(tmp_path, run_cli, monkeypatch):
    """Damaged input, not rule bugs, is under test: rules run as in normal use (not strict)."""
    monkeypatch.setenv(STRICT_ENV, "0")
    outcomes = [check_corrupted(seed, run_cli, tmp_path) for seed in (*range(CORRUPTED), *FUZZ_REGRESSIONS)]
    problems = [(o.seed, p) for o in outcomes for p in o.problems]
    assert not problems, problems[:10]
    assert sum(o.code == 1 for o in outcomes) >= CORRUPTED // 2  # most damage is caught and named


FUSED_GRAPHS = int(os.environ.get("ONNXPRUNE_PROPERTY_N", "120"))


def test_random_valid_graphs_fuse_exactly():
    """Fusion is exact on any graph the generator makes (BatchNorms, 1x1 convs on residual paths,
    concatenations, splits, shuffles...): valid, and the same outputs through onnxruntime."""
    import numpy as np

    from onnxprune import Pruner
    from onnxprune.validate import check
    from support.oracle import random_feeds, run
    from support.random_graphs import random_model

    fused_any = 0
    for seed in range(FUSED_GRAPHS):
        model = random_model(seed)
        pruner = Pruner.from_model(model)
        fused_any += pruner.fuse().changed > 0
        fused = pruner.to_model()
        check(fused)
        feeds = random_feeds(model, seed)
        for expected, actual in zip(run(model, feeds), run(fused, feeds)):
            np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())),
                                       err_msg=f"seed {seed}")
    assert fused_any >= FUSED_GRAPHS // 3, fused_any
