"""Proof that a pruned model is usable: onnx.checker, onnxruntime, same output shapes, latency."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from . import onnx_in, onnx_out
from .errors import InputError, ShapeError, ValidationError
from .ir import Graph, Value
from .options import LatencyOptions
from .shapes import stand_ins
from .tensor_types import random_array

if TYPE_CHECKING:
    from .latency import LatencyComparison

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass
class ValidationResult:
    checker: bool = False
    onnxruntime: bool = False
    shapes_match: bool = False
    provider: str = "cpu"
    output_shapes: dict[str, list[int]] = field(default_factory=dict)
    latency: "LatencyComparison | None" = None  # original and pruned side by side (onnxprune.latency)

    @property
    def latency_ms_before(self) -> float | None:
        return self.latency.ms_before if self.latency else None

    @property
    def latency_ms_after(self) -> float | None:
        return self.latency.ms_after if self.latency else None

    @property
    def latency_ratio(self) -> float | None:
        """The median of the per-round ratios (not the ratio of the two medians)."""
        return self.latency.ratio if self.latency else None


def check(model: onnx.ModelProto) -> None:
    try:
        onnx_in.run_checker(model, full_check=True)
    except Exception as exc:  # checker raises several types
        raise ValidationError(f"pruned model fails onnx.checker: {str(exc).strip().splitlines()[0]}") from None


def check_provider(provider: str) -> str:
    """The onnxruntime provider name for ``--provider``, refused up front when this install lacks it."""
    name = PROVIDERS.get(provider)
    if name is None:
        raise InputError(f"--provider {provider}: choose from {', '.join(PROVIDERS)}")
    if name not in ort.get_available_providers():
        raise InputError(f"--provider {provider}: onnxruntime here has no {name} "
                         f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu")
    return name


def read_inputs_file(npz: str | Path, inputs: list[Value]) -> dict[str, np.ndarray]:
    """Load ``--inputs`` and check it against the model's inputs: names, dtypes, ranks and fixed dims.

    Extra arrays are ignored (one file can serve several models).
    """
    try:
        with np.load(npz, allow_pickle=False) as archive:
            data = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InputError(f"--inputs {npz}: cannot read it as an .npz archive ({_line(exc)})") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"--inputs {npz}: no arrays in it")
    names = [v.name for v in inputs]
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError(f"--inputs {npz}: missing arrays for inputs {', '.join(missing)}")
    for value in inputs:
        array = data[value.name]
        expected = onnx.helper.tensor_dtype_to_np_dtype(value.dtype) if value.dtype else None
        if expected is not None and array.dtype != expected:
            raise InputError(f"--inputs {npz}: array {value.name} is {array.dtype}, the model wants {expected}")
        if value.shape is not None:
            fits = len(array.shape) == len(value.shape) and all(
                not isinstance(d, int) or d == n for d, n in zip(value.shape, array.shape))
            if not fits:
                want = "x".join(str(d) if isinstance(d, int) else "?" for d in value.shape) or "scalar"
                got = "x".join(map(str, array.shape)) or "scalar"
                raise InputError(f"--inputs {npz}: array {value.name} has shape {got}, the model wants {want}")
    return {v.name: data[v.name] for v in inputs}


def make_inputs(graph: Graph, npz: str | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for every graph input: from an .npz file, or random with the analysed shapes."""
    if npz:
        return read_inputs_file(npz, graph.inputs)
    rng = np.random.default_rng(seed)
    feeds = {}
    for declared in graph.inputs:
        value = graph.values.get(declared.name, declared)
        shape = list(value.shape or [])
        for i, d in enumerate(shape):
            if d == 0:
                raise ShapeError(f"input {value.name} has a zero-size dim {i}; give it a size with "
                                 f"--input-shape {value.name}:1x...")
            if not isinstance(d, int) or d < 0:
                if i == 0:
                    shape[i] = 1
                else:
                    raise ShapeError(f"input {value.name} has dynamic dim {i} ({d}); "
                                     f"pass --input-shape {value.name}:1x... or --inputs file.npz")
        feeds[value.name] = random_array(rng, shape, value.dtype)
    return feeds


def session(model: onnx.ModelProto | Graph | str | Path, provider: str = "cpu",
            threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime session; from a :class:`Graph`, onnxruntime reads the large weights in place.

    ``threads``: onnxruntime's intra- and inter-op thread counts, fixed (latency is only comparable at a
    stated thread count, see onnxprune.latency); None leaves onnxruntime's default (all cores).

    A graph's large weights reach onnxruntime as the graph's own arrays
    (``add_external_initializers``), not through protobuf: no copy of them is
    serialized and parsed again, so a session costs a fraction of the memory;
    weights still mapped unchanged from the input's data are references to its file,
    which onnxruntime maps rather than copies (:func:`onnx_out.reference_files`).
    """
    name = check_provider(provider)
    if isinstance(model, Graph):
        try:
            return _graph_session(model, name, threads, by_file=True)
        except Exception:  # noqa: BLE001 - an onnxruntime without the folder option: every weight in place
            return _graph_session(model, name, threads, by_file=False)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, _options(threads), providers=[name])


def _options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures come back as exceptions; ORT's own log would add stderr lines
    if threads is not None:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def _graph_session(graph: Graph, provider: str, threads: int | None, by_file: bool) -> ort.InferenceSession:
    options = _options(threads)
    model = onnx_out.to_model(graph, onnx_out.Weights.EXTERNAL)
    folder, in_files = onnx_out.reference_files(model, graph) if by_file else (None, set())
    if folder is not None:  # weights mapped unchanged from the input's data: onnxruntime maps them too
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    names = [n for n in onnx_out.left_out_weights(graph) if n not in in_files]
    in_place = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(graph.params[n])) for n in names]
    if names:
        options.add_external_initializers(names, in_place)
    created = ort.InferenceSession(model.SerializeToString(), options, providers=[provider])
    created.onnxprune_weights = in_place  # the arrays onnxruntime reads live as long as the session
    return created


@dataclass
class Reference:
    """The original model's session and outputs on the validation feeds: run before pruning."""

    session: ort.InferenceSession
    outputs: list


def run_reference(original: onnx.ModelProto, feeds, provider: str = "cpu", threads: int | None = None) -> Reference:
    """Run the input model first, so a model onnxruntime cannot run is never blamed on the pruning.

    ``threads``: make its session fit for timing at that thread count (see :func:`validate`)."""
    try:
        before = session(original, provider, threads)
        return Reference(before, before.run(None, feeds))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"onnxruntime cannot run the input model: {_line(exc)}") from None


# sizes tried, in order, for the dynamic dims (not the batch) of a model the default stand-in breaks
STAND_IN_SEARCH = (32, 128, 512, 2048)


def runnable_stand_ins(original, model: onnx.ModelProto, input_shapes: dict | None, provider: str = "cpu",
                       seed: int = 0) -> tuple[dict[str, list[int]] | None, list[str]]:
    """Input shapes at which onnxruntime runs ``original``, for a model the default stand-ins break (a
    reflect pad wider than the 8 stand-in samples): its dynamic dims (the batch stays 1) at each size of
    STAND_IN_SEARCH in turn. Returns (the first shapes that run or None, the dynamic dims' names)."""
    base = stand_ins(model, input_shapes)
    if stand_ins(model, input_shapes, STAND_IN_SEARCH[0]) == base:
        return None, []  # no dim to vary
    inputs = onnx_in.model_inputs(model)
    dims = sorted({str(d) for v in inputs if v.name in base and v.name not in (input_shapes or {})
                   for i, d in enumerate(v.shape or ()) if i > 0 and not isinstance(d, int)})
    try:
        sess = session(original, provider)
    except Exception:  # noqa: BLE001 - it cannot even load: the caller's error stands
        return None, dims
    rng = np.random.default_rng(seed)
    for size in STAND_IN_SEARCH:
        shapes = stand_ins(model, input_shapes, size)
        feeds = {v.name: random_array(rng, list(shapes.get(v.name, v.shape)), v.dtype) for v in inputs}
        try:
            sess.run(None, feeds)
        except Exception:  # noqa: BLE001 - this size does not run either: try the next
            continue
        return shapes, dims
    return None, dims


def validate(original: onnx.ModelProto | Path, pruned: onnx.ModelProto | Graph, feeds, provider: str = "cpu",
             runs: int = 20, reference: Reference | None = None,
             latency: LatencyOptions | None = None) -> ValidationResult:
    """Checker, onnxruntime, output shapes; then, unless ``runs`` is 0, latency of both side by side.

    ``latency`` says how it is timed (default: ``LatencyOptions(min_runs=runs)``); the reference's session
    is reused for timing when it was made with the same thread count."""
    from . import latency as timing  # late: onnxprune.latency makes its sessions with this module's session()
    settings = latency or LatencyOptions(min_runs=runs)
    result = ValidationResult(provider=provider)
    check(pruned if isinstance(pruned, onnx.ModelProto) else onnx_out.to_model(pruned, onnx_out.Weights.EXTERNAL))
    result.checker = True
    reference = reference or run_reference(original, feeds, provider, settings.threads if runs > 0 else None)
    try:
        after = session(pruned, provider, settings.threads if runs > 0 else None)
        out_after = after.run(None, feeds)
    except Exception as exc:
        raise ValidationError(f"onnxruntime cannot run the pruned model: {_line(exc)}") from None
    result.onnxruntime = True
    names = [o.name for o in after.get_outputs()]
    for name, a, b in zip(names, reference.outputs, out_after):
        if np.shape(a) != np.shape(b):
            raise ValidationError(f"output {name} changed shape: {np.shape(a)} -> {np.shape(b)}")
        result.output_shapes[name] = list(np.shape(b))
    result.shapes_match = True
    if runs > 0:
        before = reference.session if timing.session_threads(reference.session) == settings.threads else original
        result.latency = timing.compare([before, after], feeds, provider, options=settings)
    return result


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
