"""MatMulNBits layers built with numpy in onnxruntime's layout: the one implementation, in
scripts/realworld_quantized.py (which builds the committed models), loaded from there."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "realworld_quantized.py"
_spec = importlib.util.spec_from_file_location("realworld_quantized", _SCRIPT)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

pack = _module.pack
quantize = _module.quantize_nbits
layer = _module.nbits_layer
