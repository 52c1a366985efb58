"""Option values parsed in onnxprune.options: one OptionError (exit 2) naming the option."""
import pytest

from onnxprune.errors import EXIT_USAGE, OptionError
from onnxprune.options import parse_shapes


@pytest.mark.parametrize("values,expected", [
    (["input:1x3x224x224"], {"input": [1, 3, 224, 224]}),
    (["input:1X3X8X8"], {"input": [1, 3, 8, 8]}),
    (["a:1x2", "b:7"], {"a": [1, 2], "b": [7]}),
    (["a:1x2,b:7"], {"a": [1, 2], "b": [7]}),  # trtexec's --shapes form
    (["a:1x2, b:7", "c:3"], {"a": [1, 2], "b": [7], "c": [3]}),
    (["scale:", "a:2"], {"scale": [], "a": [2]}),  # a scalar
    (["scope/name:with:colons:2x4"], {"scope/name:with:colons": [2, 4]}),
    (["x:0:1x8"], {"x:0": [1, 8]}),  # TensorFlow names
    (["a:1x2", "a:1x2"], {"a": [1, 2]}),
    (None, {}),
])
def test_parse_shapes(values, expected):
    assert parse_shapes(values) == expected


@pytest.mark.parametrize("spec", ["input", ":1x3", "1x3x8x8", "input:1xAx8", "input:1x3x", "input:1x-3x8",
                                  "input:1x0x8", "input:1.5x3", "a:1x2,", "a:1x2,,b:3"])
def test_bad_shape_strings(spec):
    with pytest.raises(OptionError, match="--input-shape .*expected NAME:D1xD2") as info:
        parse_shapes([spec])
    assert info.value.exit_code == EXIT_USAGE


def test_one_input_given_two_shapes():
    with pytest.raises(OptionError, match="'a' is given two shapes"):
        parse_shapes(["a:1x2,a:1x3"])
