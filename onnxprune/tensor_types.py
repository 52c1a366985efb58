"""ONNX element types as numpy dtypes (one place, so the engine needs no protobuf enums)."""
from __future__ import annotations

import numpy as np
import onnx

from .errors import UnsupportedModelError


def np_dtype(elem_type: int) -> np.dtype:
    """The numpy dtype of an ONNX tensor element type (float32 = 1, int64 = 7, ...)."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(elem_type)))
    except (KeyError, TypeError, ValueError):
        raise UnsupportedModelError(f"tensor element type {elem_type} has no numpy equivalent") from None


def random_array(rng: np.random.Generator, shape, elem_type: int) -> np.ndarray:
    """Random values of an ONNX element type: normal floats, random bools, small integers (0/1,
    valid as indices and token ids of any table)."""
    dtype = np_dtype(elem_type)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    return rng.integers(0, 2, size=shape).astype(dtype)
