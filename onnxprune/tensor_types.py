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
