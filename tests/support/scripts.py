"""The scripts under scripts/ (benchmarks, exporters, generators), loaded as modules by their tests."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str, on_path: bool = False):
    """``scripts/NAME.py`` as a module, registered before it runs (dataclasses look their module
    up while it loads); ``on_path``: scripts/ on sys.path too, for a script importing its siblings."""
    if on_path and str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
