"""Progress on stderr that a failure never leaves behind.

The choice (documented in the README): each stage's timing line
(``[onnxprune] load: 0.12s``) is buffered and printed only when the whole run
succeeds, so a failed run's stderr is exactly its one error line. While a
stage runs on a terminal, a transient tqdm status line shows what is going on
and clears itself when the stage ends (``leave=False``); off a terminal (logs,
pipes) nothing is shown live.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

from tqdm import tqdm


class Stage:
    """What :meth:`Progress.stage` yields: ``seconds`` is set when the stage ends."""

    seconds: float = 0.0


class Progress:
    def __init__(self, enabled: bool = True, stream: TextIO | None = None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.lines: list[str] = []

    @contextmanager
    def stage(self, label: str) -> Iterator[Stage]:
        live = self.enabled and _is_terminal(self.stream)
        bar = tqdm(total=None, desc=f"[onnxprune] {label}", bar_format="{desc} ({elapsed})", leave=False,
                   file=self.stream, disable=not live)
        stage, start = Stage(), time.perf_counter()
        try:
            yield stage
        finally:
            bar.close()
            stage.seconds = time.perf_counter() - start
        self.lines.append(f"{label}: {stage.seconds:.2f}s")

    def flush(self) -> None:
        """Print the buffered lines (call once, when the run has succeeded)."""
        if self.enabled:
            for line in self.lines:
                print(f"[onnxprune] {line}", file=self.stream)
        self.lines.clear()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
