"""Proof that a pruned model is usable: onnx.checker, onnxruntime, same output shapes, latency."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .errors import InputError, ShapeError, ValidationError
from .ir import Graph

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass
class ValidationResult:
    checker: bool = False
    onnxruntime: bool = False
    shapes_match: bool = False
    provider: str = "cpu"
    output_shapes: dict[str, list[int]] = field(default_factory=dict)
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None

    @property
    def latency_ratio(self) -> float | None:
        if not self.latency_ms_before or self.latency_ms_after is None:
            return None
        return self.latency_ms_after / self.latency_ms_before


def check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # checker raises several types
        raise ValidationError(f"pruned model fails onnx.checker: {str(exc).strip().splitlines()[0]}") from None


def make_inputs(graph: Graph, npz: str | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for every graph input: from an .npz file, or random with the analysed shapes."""
    if npz:
        try:
            data = dict(np.load(npz))
        except (OSError, ValueError) as exc:
            raise InputError(f"--inputs {npz}: cannot read ({exc})") from None
        missing = [v.name for v in graph.inputs if v.name not in data]
        if missing:
            raise InputError(f"--inputs {npz}: missing arrays for inputs {', '.join(missing)}")
        return {v.name: data[v.name] for v in graph.inputs}
    rng = np.random.default_rng(seed)
    feeds = {}
    for declared in graph.inputs:
        value = graph.values.get(declared.name, declared)
        shape = list(value.shape or [])
        for i, d in enumerate(shape):
            if not isinstance(d, int) or d <= 0:
                if i == 0:
                    shape[i] = 1
                else:
                    raise ShapeError(f"input {value.name} has dynamic dim {i} ({d}); "
                                     f"pass --input-shape {value.name}:1x... or --inputs file.npz")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.dtype)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = rng.random(shape) > 0.5
        else:
            feeds[value.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def session(model: onnx.ModelProto | str | Path, provider: str = "cpu") -> ort.InferenceSession:
    name = PROVIDERS.get(provider)
    if name is None:
        raise InputError(f"--provider {provider}: choose from {', '.join(PROVIDERS)}")
    if name not in ort.get_available_providers():
        raise InputError(f"--provider {provider}: onnxruntime here has no {name} "
                         f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu")
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures come back as exceptions; ORT's own log would add stderr lines
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=[name])


def latency_side_by_side(sessions: list[ort.InferenceSession], feeds, runs: int = 20, warmup: int = 3) -> list[float]:
    """Median latency (ms) of each session, runs interleaved so both see the same machine load."""
    for _ in range(warmup):
        for s in sessions:
            s.run(None, feeds)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for k, s in enumerate(sessions):
            start = time.perf_counter()
            s.run(None, feeds)
            times[k].append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def validate(original: onnx.ModelProto, pruned: onnx.ModelProto, feeds, provider: str = "cpu",
             runs: int = 20) -> ValidationResult:
    result = ValidationResult(provider=provider)
    check(pruned)
    result.checker = True
    try:
        before = session(original, provider)
    except InputError:
        raise
    except Exception as exc:
        raise ValidationError(f"onnxruntime cannot run the input model: {_line(exc)}") from None
    try:
        after = session(pruned, provider)
        out_after = after.run(None, feeds)
    except Exception as exc:
        raise ValidationError(f"onnxruntime cannot run the pruned model: {_line(exc)}") from None
    out_before = before.run(None, feeds)
    result.onnxruntime = True
    names = [o.name for o in after.get_outputs()]
    for name, a, b in zip(names, out_before, out_after):
        if np.shape(a) != np.shape(b):
            raise ValidationError(f"output {name} changed shape: {np.shape(a)} -> {np.shape(b)}")
        result.output_shapes[name] = list(np.shape(b))
    result.shapes_match = True
    if runs > 0:
        result.latency_ms_before, result.latency_ms_after = latency_side_by_side([before, after], feeds, runs)
    return result


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
