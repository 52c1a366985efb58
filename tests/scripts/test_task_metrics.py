"""scripts/task_metrics.py: the task accuracies the benchmark reports."""
import sys
from pathlib import Path

import numpy as np
import pytest

from support import digits
from support.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "task_metrics.py"


@pytest.fixture(scope="module")
def tm():
    module = load_script("task_metrics")
    return module


def test_edit_distance(tm):
    assert tm.edit_distance("kitten", "sitting") == 3
    assert tm.edit_distance("", "abc") == tm.edit_distance("abc", "") == 3
    assert tm.edit_distance("same", "same") == 0


def test_ctc_decode_merges_repeats_and_drops_blanks(tm):
    chars = ["<blank>", "a", "b"]
    steps = [1, 1, 0, 1, 2, 2, 0, 0]  # a a _ a b b _ _  ->  "aab"
    assert tm.ctc_decode(np.eye(3)[steps], chars) == "aab"


def test_ctc_char_accuracy_counts_characters_not_lines(tm):
    chars = ["<blank>", "a", "b"]
    score = tm.ctc_char(chars)
    scores = np.stack([np.eye(3)[[1, 0, 2]], np.eye(3)[[1, 1, 1]]])  # "ab", "a"
    hits, total = score([scores], np.array(["ab", "ab"]))
    assert (hits, total) == (3.0, 4.0)  # the second line misses one of its two characters
    hits, total = score([np.stack([np.eye(3)[[1, 0, 1, 0, 1]]])], np.array(["b"]))  # "aaa" for "b": clamped at 0
    assert (hits, total) == (0.0, 1.0)


def test_top1_accuracy_in_batches_matches_the_digits_helper(tm):
    x, y = digits.heldout()
    got = tm.accuracy(digits.model().SerializeToString(), digits.INPUT, x, y, "top1", batch=50)
    assert got == pytest.approx(digits.accuracy(digits.model()))
