"""Never slower: a size-target plan is timed against the original before it is returned.

A plan that meets ``--target-macs`` can still be slower than the original
(widths off the provider's fast kernels). :func:`never_slower` times the
plan the search found; where it is not clearly faster it tries the same
target on coarser width grids (fewer, larger steps of channel counts) and
returns the fastest plan within the target's tolerance, with every timing
it took (:class:`SpeedCheck`, in the report).

Latency is measured in one place, :func:`compare_latency` (fixed threads,
the two models interleaved, a spread): the switch point to the project's
latency module once it lands.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable

import numpy as np

from .errors import PlanError
from .plan import Plan
from .targets import SearchResult

CHUNK = 4  # runs per chunk: one latency ratio per chunk, the spread is over chunks


@dataclass(frozen=True)
class LatencyRatio:
    """Candidate latency over the original's: median and interquartile range of the per-chunk ratios."""

    median: float
    low: float
    high: float

    @property
    def faster(self) -> bool:
        """Faster with the spread included."""
        return self.high < 1.0

    @property
    def slower(self) -> bool:
        return self.low > 1.0

    def describe(self) -> str:
        return f"x{self.median:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict:
        return {"median": self.median, "q1": self.low, "q3": self.high}


def compare_latency(original, candidate, feeds: dict, provider: str = "cpu", runs: int = 40,
                    threads: int = 1) -> LatencyRatio:
    """Latency of ``candidate`` over ``original`` (models or graphs), ``threads`` threads, interleaved.

    The one function that times a plan for the speed check (to switch to
    ``onnxprune.latency.compare`` when that lands).
    """
    from .validate import latency_side_by_side, session  # late: onnxruntime
    sessions = [session(original, provider, threads=threads), session(candidate, provider, threads=threads)]
    ratios = []
    for chunk in range(max(3, runs // CHUNK)):
        order = (0, 1) if chunk % 2 == 0 else (1, 0)  # who runs first alternates
        medians = latency_side_by_side([sessions[k] for k in order], feeds, CHUNK, warmup=3 if chunk == 0 else 0)
        timed = dict(zip(order, medians))
        ratios.append(timed[1] / timed[0])
    low, median, high = np.percentile(ratios, [25, 50, 75])
    return LatencyRatio(float(median), float(low), float(high))


@dataclass(frozen=True)
class SpeedCheck:
    """What the check timed: each candidate's widths and latency ratio, and which one it returned."""

    chosen: LatencyRatio
    tried: tuple[tuple[str, float, LatencyRatio], ...]  # (widths, MACs/params fraction reached, latency)

    @property
    def faster(self) -> bool:
        return self.chosen.faster

    def to_dict(self) -> dict:
        return {"latency_ratio": self.chosen.to_dict(), "faster": self.faster,
                "tried": [{"widths": w, "reached": r, "latency_ratio": lat.to_dict()} for w, r, lat in self.tried]}


def never_slower(first: SearchResult, alternatives: Iterable[Callable[[], SearchResult]],
                 latency: Callable[[Plan], LatencyRatio]) -> SearchResult:
    """``first`` if it is faster than the original; else the fastest of it and the alternatives
    (searched lazily, in order, until one is faster) that meet the target.

    An alternative the options cannot reach (PlanError) is skipped.
    """
    candidates = [(first, latency(first.plan))]
    if not candidates[0][1].faster:
        for make in alternatives:
            try:
                result = make()
            except PlanError:
                continue
            if not result.met:
                continue
            candidates.append((result, latency(result.plan)))
            if candidates[-1][1].faster:
                break
    best, ratio = min(candidates, key=lambda c: (not c[1].faster, c[1].median))
    tried = tuple((r.grid, r.reached, lat) for r, lat in candidates)
    return replace(best, speed=SpeedCheck(ratio, tried))
