"""The engine knows no operator names: all operator knowledge lives in ``opspecs/``.

Scans every module of the ``onnxprune`` package for string constants that
name an ONNX operator. The loader may know ``Constant`` (it turns Constant
nodes into parameters at the protobuf edge); nothing else may.
"""
from __future__ import annotations

import ast
from pathlib import Path

import onnx

import onnxprune

ALLOWED = {"onnx_in.py": {"Constant"}}


def _operator_names() -> set[str]:
    return {schema.name for schema in onnx.defs.get_all_schemas_with_history()}


def _string_constants(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_engine_modules_name_no_operator():
    ops = _operator_names()
    package = Path(onnxprune.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] == "opspecs":  # the rules (a real folder once installed)
            continue
        allowed = ALLOWED.get(path.name, set())
        for line, text in _string_constants(path):
            if text in ops and text not in allowed:
                found.append(f"{path.relative_to(package)}:{line} names operator {text!r}")
    assert not found, "engine code names operators (move it to opspecs/):\n" + "\n".join(found)


def test_scan_would_catch_an_operator_name(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('if node.op_type == "BatchNormalization":\n    pass\n')
    assert ("BatchNormalization" in {t for _, t in _string_constants(sample)}) and "BatchNormalization" in _operator_names()
