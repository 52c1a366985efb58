"""Weights by reference: arrays mapped from their files, and their pages given back once read.

A mapped weight costs memory only for the pages read; once a pass is done with
them (written out, sliced), :func:`release` drops them again, so reading a model
once from front to back never holds more than a block of it (the file stays in
the page cache, which is not the process's memory).
"""
from __future__ import annotations

import mmap

import numpy as np

PAGE = mmap.PAGESIZE


def mapped_base(array: np.ndarray) -> mmap.mmap | None:
    """The mmap an array (a np.memmap or a view of one) reads from, or None."""
    mm = getattr(array, "_mmap", None)
    return mm if isinstance(mm, mmap.mmap) and not mm.closed else None


def release(array: np.ndarray) -> None:
    """Drop the resident pages of a mapped array (a no-op for others); they are read again from
    the file if touched later. The mapping is private and never written, so nothing is lost."""
    mm = mapped_base(array)
    if mm is None or not hasattr(mm, "madvise") or array.size == 0:
        return
    base = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
    start = array.__array_interface__["data"][0] - base
    stop = start + array.nbytes if array.flags.c_contiguous else len(mm)
    first = max(0, start // PAGE * PAGE)
    stop = min(len(mm), -(-stop // PAGE) * PAGE)
    if stop > first:
        mm.madvise(mmap.MADV_DONTNEED, first, stop - first)


def file_extent(array: np.ndarray) -> tuple[str, int, int] | None:
    """(file, offset, length) of a row-major array read unchanged from its file by mapping, else None.

    Such a weight can be handed to onnxruntime as a reference to the file (which it maps too)
    rather than as bytes it would copy."""
    mm = mapped_base(array)
    filename = getattr(array, "filename", None)
    if mm is None or not filename or not array.flags.c_contiguous or array.dtype.byteorder == ">":
        return None
    base = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
    mapped_from = int(array.offset) - int(array.offset) % mmap.ALLOCATIONGRANULARITY
    return filename, mapped_from + array.__array_interface__["data"][0] - base, int(array.nbytes)
