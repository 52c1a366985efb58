"""Suite-wide settings: rules run in strict mode, so a rule that raises fails its test loudly.

Set in the environment (not only a fixture) so the CLI subprocesses that
tests start are strict too. See onnxprune.rules.call_rule.
"""
import os

from onnxprune.rules import STRICT_ENV

os.environ[STRICT_ENV] = "1"
