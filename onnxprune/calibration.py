"""Calibration data: the samples a model is run on to score channels, recover accuracy
and measure how close a pruned model stays to the original.

Accepted layouts (``--calib PATH``):

- an ``.npz`` file with one array per model input, named like the input, the
  first axis being samples;
- a folder of such ``.npz`` files (concatenated along the sample axis, in file
  name order), or of ``.npy`` files for single-input models (each one array,
  first axis = samples).

Arrays are checked against the model's declared inputs before any work:
names, element types (a float array feeds any float input; integer arrays feed
integer inputs; other mismatches are errors) and every static dim. A part of
the samples is held out (:meth:`CalibrationSet.split`) to report fidelity on
data that selection and recovery did not see.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import InputError
from .ir import Value
from .tensor_types import np_dtype, random_array

OPTION = "--calib"


@dataclass(frozen=True)
class CalibrationSet:
    """Samples for every model input: ``arrays[name]`` has the samples on axis 0.

    ``whole``: the arrays are one feed, not samples stacked on axis 0, for models whose first
    axis is no batch (a GCN's x [nodes, F] and adj [nodes, nodes]: slicing nodes apart breaks A @ X)."""

    arrays: dict[str, np.ndarray]
    source: str = "calibration data"
    whole: bool = False
    unused: tuple[str, ...] = ()  # arrays in the data that are no model input (loading reports them)

    @property
    def n_samples(self) -> int:
        if self.whole:
            return 1 if self.arrays else 0
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    # ------------------------------------------------------------ making
    @classmethod
    def load(cls, path: str | Path, inputs: Sequence[Value], option: str = OPTION) -> "CalibrationSet":
        """Read and check calibration data for a model with the given (non-constant) inputs."""
        path = Path(path)
        label = f"{option} {path}"
        if not path.exists():
            raise InputError(f"{label}: no such file or folder")
        files = _files(path, label)
        parts: dict[str, list[np.ndarray]] = {}
        for file in files:
            for name, array in _read(file, inputs, label).items():
                parts.setdefault(name, []).append(array)
        arrays = {name: np.concatenate(chunks, axis=0) if len(chunks) > 1 else chunks[0]
                  for name, chunks in parts.items()}
        return cls.from_arrays(arrays, inputs, label)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], inputs: Sequence[Value],
                    label: str = "calibration data") -> "CalibrationSet":
        """Check in-memory arrays (samples on axis 0) against the model's inputs."""
        wanted = [v.name for v in inputs]
        missing = [n for n in wanted if n not in arrays]
        if missing:
            raise InputError(f"{label}: no array for model input(s) {', '.join(missing)} "
                             f"(found: {', '.join(sorted(arrays)) or 'none'})")
        checked = {v.name: _check_array(arrays[v.name], v, label) for v in inputs}
        counts = {n: len(a) for n, a in checked.items()}
        if len(set(counts.values())) > 1:
            raise InputError(f"{label}: inputs have different sample counts {counts}")
        if checked and not next(iter(counts.values())):
            raise InputError(f"{label}: no samples")
        return cls(checked, label, unused=tuple(sorted(set(arrays) - set(wanted))))

    def unused_warning(self) -> str | None:
        """What to tell the user about arrays that are no model input (a typo in a name, the wrong file)."""
        if not self.unused:
            return None
        return (f"{self.source}: array(s) {', '.join(self.unused)} are no model input and were not used "
                f"(model inputs: {', '.join(self.arrays)})")

    @classmethod
    def random(cls, inputs: Sequence[Value], n_samples: int, shapes: dict[str, tuple] | None = None,
               seed: int = 0) -> "CalibrationSet":
        """Random samples (normal floats, small integers) where the user gave no data.

        ``shapes`` gives each input's per-sample shape; by default the declared shape
        without its first (batch) axis, which must then be static.
        """
        rng = np.random.default_rng(seed)
        arrays = {}
        for value in inputs:
            shape = tuple((shapes or {}).get(value.name) or _sample_shape(value))
            arrays[value.name] = random_array(rng, (n_samples,) + shape, value.dtype)
        return cls(arrays, "random inputs")

    # ------------------------------------------------------------ using
    def split(self, holdout: float = 0.2, seed: int = 0) -> tuple["CalibrationSet", "CalibrationSet"]:
        """(fit, held-out): a random ``holdout`` fraction is held out (at least one sample
        each side when there are two or more samples)."""
        n = self.n_samples
        if n < 2 or holdout <= 0 or self.whole:
            return self, self
        k = min(n - 1, max(1, int(round(n * holdout))))
        order = np.random.default_rng(seed).permutation(n)
        held, fit = np.sort(order[:k]), np.sort(order[k:])
        return (CalibrationSet({a: v[fit] for a, v in self.arrays.items()}, self.source + " (fit part)"),
                CalibrationSet({a: v[held] for a, v in self.arrays.items()}, self.source + " (held out)"))

    def take(self, n: int) -> "CalibrationSet":
        if self.whole:
            return self
        return CalibrationSet({a: v[:n] for a, v in self.arrays.items()}, self.source)

    def batches(self, batch_size: int = 16) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of at most ``batch_size`` samples, in order (a ``whole`` set: its one feed)."""
        if self.whole:
            yield dict(self.arrays)
            return
        for start in range(0, self.n_samples, max(1, batch_size)):
            yield {name: array[start:start + batch_size] for name, array in self.arrays.items()}

    def n_batches(self, batch_size: int = 16) -> int:
        if self.whole:
            return 1
        return -(-self.n_samples // max(1, batch_size))


def has_batch_axis(inputs: Sequence[Value]) -> bool:
    """Whether samples can be stacked on axis 0 of every input: each first dim is dynamic with a
    symbol found at no other axis (a ``batch``), or a static 1. Not so for a graph network's
    ``nodes`` (x [nodes, F], adj [nodes, nodes]), a fixed first dim > 1 or a scalar input."""
    inner = {d for v in inputs for d in list(v.shape or [])[1:] if isinstance(d, str) and d}
    for value in inputs:
        if not value.shape:  # a scalar (or a rank unknown): no axis to stack samples on
            return False
        lead = value.shape[0]
        if isinstance(lead, int) and lead > 0:
            if lead != 1:
                return False
        elif isinstance(lead, str) and lead in inner:
            return False
    return True


def _sample_shape(value: Value) -> tuple[int, ...]:
    dims = list(value.shape or [])[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise InputError(f"input {value.name} has dynamic dims {tuple(value.shape or ())}; "
                         f"give calibration data ({OPTION}) or --input-shape")
    return tuple(dims)


def _files(path: Path, label: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{label}: not a file or folder")
    files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy") and p.is_file())
    if not files:
        raise InputError(f"{label}: the folder holds no .npz or .npy files")
    return files


def _read(file: Path, inputs: Sequence[Value], label: str) -> dict[str, np.ndarray]:
    try:
        if file.suffix == ".npy":
            if len(inputs) != 1:
                raise InputError(f"{label}: {file.name} is a bare .npy array, but the model has "
                                 f"{len(inputs)} inputs: use .npz files with one array per input")
            return {inputs[0].name: np.load(file, allow_pickle=False)}
        with np.load(file, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InputError(f"{label}: cannot read {file.name} ({_first_line(exc)})") from None


def _check_array(array: np.ndarray, value: Value, label: str) -> np.ndarray:
    array = np.asarray(array)
    want = np_dtype(value.dtype)
    if array.dtype != want:
        same_kind = (np.issubdtype(array.dtype, np.floating) and np.issubdtype(want, np.floating)) or \
                    (np.issubdtype(array.dtype, np.integer) and np.issubdtype(want, np.integer))
        if not same_kind:
            raise InputError(f"{label}: array {value.name} is {array.dtype}, the model input is {want}")
        array = array.astype(want)
    declared = tuple(value.shape) if value.shape is not None else None
    if declared is not None:
        if array.ndim != len(declared):
            raise InputError(f"{label}: array {value.name} has shape {array.shape} (rank {array.ndim}); "
                             f"the model input is rank {len(declared)} {_show(declared)} with samples on axis 0")
        for axis, (got, dim) in enumerate(zip(array.shape, declared)):
            if axis > 0 and isinstance(dim, int) and dim > 0 and got != dim:
                raise InputError(f"{label}: array {value.name} has shape {array.shape}; "
                                 f"the model input is {_show(declared)} (axis {axis} differs)")
    return array


def _show(shape) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
