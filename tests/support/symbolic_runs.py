"""Count onnxruntime's symbolic shape inference runs (the slow part of analysis) during a test."""
from __future__ import annotations

from onnxprune import shapes


def count_symbolic_runs(monkeypatch) -> list:
    """A list that gets each model symbolic inference runs on, from now until the test ends."""
    calls = []
    real = shapes._ort_infer

    def counting(model):
        calls.append(model)
        return real(model)

    monkeypatch.setattr(shapes, "_ort_infer", counting)
    return calls
