"""Never slower: a size-target plan is timed against the original before it is returned.

A plan that meets ``--target-macs`` can still be slower than the original
(widths off the provider's fast kernels). :func:`never_slower` times the
plan the search found; where it is not clearly faster it tries the same
target on coarser width grids (fewer, larger steps of channel counts) and
returns the fastest plan within the target's tolerance, with every timing
it took (:class:`SpeedCheck`, in the report).

Latency is measured as everywhere else (:mod:`onnxprune.latency`: fixed
threads, the two models interleaved, a 95% interval of the ratio).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable


from .errors import PlanError
from .latency import RatioSpread, Verdict
from .options import LatencyOptions
from .plan import Plan
from .targets import SearchResult

LatencyRatio = RatioSpread  # a candidate's latency over the original's, with its spread


def _faster(ratio: RatioSpread) -> bool:
    """Faster with the spread included."""
    return ratio.verdict is Verdict.FASTER

def compare_latency(original, candidate, feeds: dict, provider: str = "cpu",
                    options: LatencyOptions | None = None) -> RatioSpread:
    """Latency of ``candidate`` over ``original`` (models or graphs), timed as the summary times it
    (onnxprune.latency: fixed threads, interleaved pairs of rounds, a 95% interval)."""
    from . import latency  # late: onnxruntime
    return latency.compare([original, candidate], feeds, provider, options=options).spread


@dataclass(frozen=True)
class SpeedCheck:
    """What the check timed: each candidate's widths and latency ratio, and which one it returned."""

    chosen: LatencyRatio
    tried: tuple[tuple[str, float, LatencyRatio], ...]  # (widths, MACs/params fraction reached, latency)

    @property
    def faster(self) -> bool:
        return _faster(self.chosen)

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
    if not _faster(candidates[0][1]):
        for make in alternatives:
            try:
                result = make()
            except PlanError:
                continue
            if not result.met:
                continue
            candidates.append((result, latency(result.plan)))
            if _faster(candidates[-1][1]):
                break
    best, ratio = min(candidates, key=lambda c: (not _faster(c[1]), c[1].median))
    tried = tuple((r.grid, r.reached, lat) for r, lat in candidates)
    return replace(best, speed=SpeedCheck(ratio, tried))
