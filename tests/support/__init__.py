"""Helpers shared by the tests."""
from pathlib import Path

import onnxprune

# The folder holding the onnxprune these tests import: this checkout, or site-packages when the
# suite runs against an installed wheel (.ci/run). CLI subprocesses get it on PYTHONPATH, so they
# run the same package as the test that starts them.
PACKAGE_PARENT = Path(onnxprune.__file__).resolve().parents[1]
