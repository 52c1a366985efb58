"""Suite-wide settings: rules run in strict mode, so a rule that raises fails its test loudly.
Widths follow the default width grid (nothing is measured, no cache is written) and size
targets are not timed against the original, so no result depends on the machine's timings;
the tests of those features inject timings (tests/engine/test_widthgrid.py, test_speed.py).

Set in the environment (not only a fixture) so the CLI subprocesses that
tests start see them too. See onnxprune.rules.call_rule.
"""
import os

from onnxprune.api import SPEED_CHECK_ENV
from onnxprune.rules import STRICT_ENV
from onnxprune.widthgrid import MODE_ENV, GridMode

os.environ[STRICT_ENV] = "1"
os.environ[MODE_ENV] = GridMode.DEFAULT.value
os.environ[SPEED_CHECK_ENV] = "0"
