"""``--target-latency`` over depth and width together: which blocks to remove and how thin to make the rest.

Removing whole blocks and thinning layers buy latency at different prices per MAC, and the
price depends on the provider and batch (design/method.md, section 5: a launch-bound GPU
gains from fewer layers, a CPU from fewer MACs on fast widths). No fixed rule picks the mix,
so it is measured. For each depth k on a short ladder (the k least important blocks, as
``--depth k`` picks them: the blocks of k+1 contain those of k), the width level that brings
the measured latency to the target on the shallower model is searched
(:func:`onnxprune.targets.search` on latency, with a lighter measurement); then every
candidate is timed once more, all side by side with the original in one interleaved
measurement (the same load for all), and the winner is the candidate that meets the
target and is measurably faster, with the best fidelity proxy:

- with calibration data, the worst-output cosine against the original on those samples;
- without, the fraction of MACs kept: at the same latency, the plan that removed the fewest
  MACs bought its speed the cheapest and keeps the most capacity.

Where none meets the target, the fastest measurably faster candidate wins; a candidate that
is not measurably faster is returned only when no candidate is (and the report says so).
The ladder stops at the first depth that meets the target alone: more blocks only lose more.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from .blocks import BlockKey
from .errors import PlanError
from .latency import RatioSpread, Verdict
from .options import LatencyOptions
from .targets import TOLERANCE, SearchResult

LADDER = 5  # depths tried at most (evenly spaced from 0 to every block that can go)


@dataclass(frozen=True)
class Candidate:
    """k blocks removed, then a width plan on the shallower model (possibly empty)."""

    depth: int
    blocks: tuple[BlockKey, ...]
    search: SearchResult  # the width search on the model without those blocks
    macs: float  # fraction of the original's MACs the candidate keeps
    cosine: float | None  # worst-output cosine against the original on calibration data (None: none given)
    latency: RatioSpread | None = None  # the final side-by-side measurement

    @property
    def proxy(self) -> float:
        """Higher is better: the cosine where there was data, else the MACs kept."""
        return self.cosine if self.cosine is not None else self.macs

    @property
    def faster(self) -> bool:
        return self.latency is not None and self.latency.verdict is Verdict.FASTER

    def meets(self, target: float) -> bool:
        return self.faster and self.latency.median <= target + TOLERANCE

    def label(self) -> str:
        width = "width" if self.search.plan.decisions else ""
        depth = f"{self.depth} block{'s' if self.depth != 1 else ''}" if self.depth else ""
        return " + ".join(p for p in (depth, width) if p) or "nothing"

    def to_dict(self) -> dict:
        return {"depth": self.depth, "blocks": [{"join": j, "residual": r} for j, r in self.blocks],
                "what": self.label(), "width_level": self.search.level, "channels": self.search.plan.removed_channels,
                "latency_searched": self.search.reached, "macs": self.macs, "cosine": self.cosine,
                "latency_ratio": self.latency.to_dict() if self.latency else None}


@dataclass(frozen=True)
class DepthWidthSearch:
    target: float
    chosen: Candidate
    candidates: tuple[Candidate, ...]  # in ladder order
    proxy: str  # what ranked the candidates that met the target
    seconds: float

    @property
    def met(self) -> bool:
        return self.chosen.meets(self.target)

    def to_dict(self) -> dict:
        return {"target": self.target, "chosen": self.candidates.index(self.chosen), "met": self.met,
                "proxy": self.proxy, "seconds": self.seconds, "candidates": [c.to_dict() for c in self.candidates]}


def ladder(available: int, most: int = LADDER) -> list[int]:
    """Depths to try: 0 to ``available``, evenly spaced, at most ``most`` of them."""
    if available <= 0 or most <= 1:
        return [0]
    n = min(most, available + 1)
    return sorted({round(i * available / (n - 1)) for i in range(n)})


def pick(candidates: Sequence[Candidate], target: float) -> Candidate:
    """The best proxy among those that meet the target (ties: fewer blocks); else the fastest
    measurably faster; else the fastest."""
    meeting = [c for c in candidates if c.meets(target)]
    if meeting:
        return max(meeting, key=lambda c: (c.proxy, -c.depth))
    faster = [c for c in candidates if c.faster]
    return min(faster or candidates, key=lambda c: (c.latency.median, c.depth))


Explore = Callable[[int], "Candidate | None"]  # depth -> candidate (None: the target is out of reach there)
TimeAll = Callable[[list[Candidate]], Sequence[RatioSpread]]  # each candidate's latency over the original's


def search(depths: Sequence[int], explore: Explore, time_all: TimeAll, target: float, proxy: str) -> DepthWidthSearch:
    """Explore each depth in turn (stopping at the first that meets the target with no width
    removed), time every candidate side by side, pick (see :func:`pick`)."""
    start = time.perf_counter()
    candidates: list[Candidate] = []
    for k in depths:
        candidate = explore(k)
        if candidate is None:
            continue
        candidates.append(candidate)
        if not candidate.search.plan.decisions and candidate.search.reached <= target + TOLERANCE:
            break  # depth alone reaches it: more blocks would only lose more
    if not candidates:
        raise PlanError(f"--target-latency {target:g} is out of reach at every depth tried ({', '.join(map(str, depths))} "
                        "blocks): pruning every group as far as the options allow is not that fast")
    ratios = time_all(candidates)
    timed = tuple(replace(c, latency=r) for c, r in zip(candidates, ratios))
    return DepthWidthSearch(target, pick(timed, target), timed, proxy, time.perf_counter() - start)


def exploring(options: LatencyOptions) -> LatencyOptions:
    """The lighter measurement of each width-search step: a quarter of the time limit, half the
    runs and a looser spread (the final side-by-side timing of the candidates decides)."""
    runs = max(4, options.min_runs // 2)
    return replace(options, min_runs=runs, max_runs=max(runs, options.max_runs // 2),
                   max_seconds=options.max_seconds / 4, spread=min(0.5, 2 * options.spread))


__all__ = ["Candidate", "DepthWidthSearch", "ladder", "pick", "search", "exploring", "LADDER"]
