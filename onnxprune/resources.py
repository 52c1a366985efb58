"""Resource guards: refuse, with one line saying how much, a run that would not fit in memory.

Checked after analysis (when every tensor's shape is known) and before any
input is allocated or any model is run: the estimate is the bytes of every
tensor of the original model at the analysed shapes (inputs, activations,
outputs, weights), counted twice because validation holds the original and the
pruned model. onnxruntime reuses buffers, so this over-estimates; it exists to
turn ``--input-shape x:1x3x100000x100000`` into a clear refusal instead of a
MemoryError half-way through.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np
import onnx

from .errors import OptionError, ResourceError
from .ir import Graph

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, option: str = "--memory-limit") -> int | None:
    """``"8G"``, ``"512M"``, ``"1e9"`` -> bytes; ``"none"`` / ``"0"`` -> no limit (None)."""
    spec = text.strip().lower()
    if spec in ("none", "off", "0"):
        return None
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?)i?b?", spec)
    if not match:
        raise OptionError(f"{option} '{text}': expected a size such as 8G, 512M or none")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(value) or value < 1:
        raise OptionError(f"{option} '{text}': expected a size such as 8G, 512M or none")
    return int(value)


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def model_bytes(graph: Graph) -> int:
    """Bytes of every statically shaped tensor of ``graph`` plus its weights."""
    total = sum(int(a.nbytes) for a in graph.params.values())
    for name, value in graph.values.items():
        if name in graph.params or value.static_shape is None:
            continue
        total += math.prod(value.static_shape) * _itemsize(value.dtype)
    return total


def check_memory(graph: Graph, limit: int | None, what: str = "validation") -> None:
    """Raise ResourceError when running ``graph`` (original and pruned) would need more than ``limit``."""
    if limit is None:
        return
    need = 2 * model_bytes(graph)
    if need > limit:
        raise ResourceError(f"{what} would need about {human(need)} of memory for tensors, more than the "
                            f"{human(limit)} limit; use --no-validate, a smaller --input-shape, or --memory-limit")


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _itemsize(dtype: int) -> int:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype)).itemsize
    except (KeyError, TypeError, ValueError):
        return 8
