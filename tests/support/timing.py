"""Scripted timings for onnxprune.latency: a fake clock and runner, so no test depends on the machine's speed."""
from __future__ import annotations

import functools
from typing import Callable

from onnxprune import latency


class ScriptedTimings:
    """Timed run ``n`` (0-based, per model) of model ``k`` takes ``seconds(k, n)`` on a clock only runs advance;
    the ``warmup`` runs before them take ``seconds(k, -1)``.

    ``calls`` records (model index, session) of every run, warm-up included; with ``run_sessions`` each
    session really runs too (its outputs are discarded), proving the sessions work."""

    def __init__(self, seconds: Callable[[int, int], float], run_sessions: bool = False, warmup: int = 0):
        self.seconds, self.run_sessions, self.warmup = seconds, run_sessions, warmup
        self.now = 0.0
        self.calls: list[tuple[int, object]] = []
        self._count: dict[int, int] = {}

    def clock(self) -> float:
        return self.now

    def runner(self, index: int, session, feeds) -> None:
        n = self._count.get(index, 0)
        self._count[index] = n + 1
        self.calls.append((index, session))
        if self.run_sessions:
            session.run(None, dict(feeds))
        self.now += self.seconds(index, max(n - self.warmup, -1))

    def compare(self, *args, **kwargs):
        return latency.compare(*args, clock=self.clock, runner=self.runner, **kwargs)

    def install(self, monkeypatch) -> "ScriptedTimings":
        """Every onnxprune.latency.compare call (validation, --target-latency) gets these timings."""
        monkeypatch.setattr(latency, "compare", functools.partial(latency.compare, clock=self.clock,
                                                                  runner=self.runner))
        return self


def constant(*seconds: float) -> Callable[[int, int], float]:
    """Model k always takes seconds[k]."""
    return lambda k, n: seconds[k]


def alternating(base: float, ratios: tuple[float, ...]) -> Callable[[int, int], float]:
    """Model 0 takes ``base``; model 1's n-th run takes base * ratios[n % len(ratios)] (noise in a pattern)."""
    return lambda k, n: base if k == 0 else base * ratios[max(n, 0) % len(ratios)]


def paired(base: float, ratios: tuple[float, ...]) -> Callable[[int, int], float]:
    """Model 0 takes ``base``; model 1 takes base * ratios[i % len(ratios)] in both rounds of pair i, so the
    ratio of pair i (onnxprune.latency measures pairs of rounds) is exactly that."""
    return lambda k, n: base if k == 0 else base * ratios[(max(n, 0) // 2) % len(ratios)]
