"""scripts/text_data.py: BERT-uncased WordPiece tokenization and offline sentences from docstrings."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from support.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "text_data.py"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "token", "##ization", "##s", "una", "##ffa", "##ble",
         "cafe", ",", "!", "'", "t", "don", "is", "\u4e2d"]


@pytest.fixture(scope="module")
def text_data():
    module = load_script("text_data")
    return module


@pytest.fixture
def tokenizer(text_data, tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"type": "WordPiece", "unk_token": "[UNK]",
                                          "vocab": {t: i for i, t in enumerate(VOCAB)}}}))
    return text_data.WordPiece.load(path)


def test_wordpiece_lowercases_strips_accents_splits_punctuation_and_cjk(tokenizer):
    assert tokenizer.basic("The Café, don't!\u4e2dX") == ["the", "cafe", ",", "don", "'", "t", "!", "\u4e2d", "x"]
    assert tokenizer.wordpiece("unaffable") == ["una", "##ffa", "##ble"]
    assert tokenizer.wordpiece("tokenizations") == ["token", "##ization", "##s"]
    assert tokenizer.wordpiece("tokenx") == ["[UNK]"]  # a word with no full split is one unknown


def test_encode_pads_and_truncates_with_cls_and_sep(tokenizer):
    out = tokenizer.encode(["The tokenization!", "the the the the the the"], length=6)
    np.testing.assert_array_equal(out["input_ids"], [[2, 4, 5, 6, 13, 3], [2, 4, 4, 4, 4, 3]])
    np.testing.assert_array_equal(out["attention_mask"], np.ones((2, 6)))
    short = tokenizer.encode(["Is"], length=5)
    np.testing.assert_array_equal(short["input_ids"], [[2, 17, 3, 0, 0]])
    np.testing.assert_array_equal(short["attention_mask"], [[1, 1, 1, 0, 0]])
    assert short["input_ids"].dtype == np.int64


def test_sentences_keep_prose_and_drop_code(text_data):
    doc = ("Return the number of items in the container, counting duplicates.\n\n"
           ">>> len([1, 2])\n2\n\n    indented code block here that is long enough to count\n\n"
           "Set x_y = 3 when the flag is on and nothing else applies.  Short one.  "
           "This sentence spans\ntwo lines of the docstring and is kept whole.")
    assert text_data.sentences(doc) == ["Return the number of items in the container, counting duplicates.",
                                        "This sentence spans two lines of the docstring and is kept whole."]


def test_calibration_and_heldout_sentences_are_deterministic_and_disjoint(text_data):
    calib, heldout = text_data.splits(40, 30, seed=0)
    assert (calib, heldout) == text_data.splits(40, 30, seed=0)
    assert len(calib) == 40 and len(heldout) == 30 and not set(calib) & set(heldout)


def test_more_calibration_sentences_leave_the_heldout_set_as_it_was(text_data):
    calib, heldout = text_data.splits(40, 30, seed=0)
    more, same = text_data.splits(40, 30, seed=0, more_calib=25)
    assert same == heldout and more[:40] == calib and len(set(more)) == 65 and not set(more) & set(heldout)
