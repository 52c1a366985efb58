"""Latency of models side by side: a ratio with its spread, measured so that it can be trusted.

A latency figure is only as good as its measurement (design/method.md, section
5): every session runs at a stated, fixed thread count (1 by default: a CPU
comparison on a shared machine), each model is warmed up, then the models run
interleaved, in pairs of rounds with the order reversed in the second (ABBA),
until the ratio is known precisely enough, a time limit or a maximum of rounds.

The ratio is the median over pairs of rounds of the model's time over the
first model's, each summed over the pair. Both models of a pair saw the same
machine load, and each ran once first and once second: on a loaded machine
the position in a round alone moves a per-round ratio by x2 (the scheduler's
time slices), which the pair cancels; a ratio of two medians taken apart can
be off by more than that. Its spread is the distribution-free 95% confidence
interval of the median (order statistics: the count of pairs below the median
is Binomial(n, 1/2)) and, for the shape of the noise, the interquartile range
of the pairs. The interval shrinks with more rounds, so it is what stops the
measurement; a ratio whose interval contains 1.0 is "no measurable change".

Time and inference are injectable (``clock``, ``runner``): tests give scripted
timings and never depend on the machine's.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, replace
from enum import Enum
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import OptionError
from .options import LatencyOptions
from .validate import session as _session

Clock = Callable[[], float]  # seconds, monotonic (time.perf_counter)
Runner = Callable[[int, Any, Mapping[str, np.ndarray]], object]  # (model index, session, feeds): one inference
CONFIDENCE = 0.95


class Verdict(Enum):
    FASTER = "faster"
    NO_CHANGE = "no measurable change"
    SLOWER = "slower"


class Stop(Enum):
    """Why the rounds ended."""

    SPREAD = "spread"  # the confidence interval got narrow enough
    TIME = "time limit"
    RUNS = "max runs"


def run_once(index: int, session, feeds: Mapping[str, np.ndarray]) -> object:
    """The default runner: one inference, every output."""
    return session.run(None, dict(feeds))


def session(model, provider: str = "cpu", threads: int = 1):
    """An onnxruntime session fit for timing: ``threads`` intra- and inter-op threads, fixed."""
    return _session(model, provider, threads)


def session_threads(sess) -> int | None:
    """The intra-op thread count a session was made with (0: onnxruntime's default); None if unknown."""
    try:
        return sess.get_session_options().intra_op_num_threads
    except AttributeError:
        return None


@dataclass(frozen=True)
class RatioSpread:
    """One model's latency over the first model's: median over pairs of rounds and its spread."""

    median: float
    ci95: tuple[float, float]  # 95% confidence interval of the median
    iqr: tuple[float, float]  # 25th and 75th percentiles of the ratios of the pairs of rounds

    @property
    def verdict(self) -> Verdict:
        low, high = self.ci95
        if high < 1.0:
            return Verdict.FASTER
        if low > 1.0:
            return Verdict.SLOWER
        return Verdict.NO_CHANGE

    @property
    def half_width(self) -> float:
        """Half the confidence interval, as a fraction of the median."""
        return (self.ci95[1] - self.ci95[0]) / 2 / self.median if self.median > 0 else math.inf

    @classmethod
    def of(cls, ratios: np.ndarray) -> "RatioSpread":
        ordered = np.sort(ratios)
        lo, hi = median_ci_ranks(len(ordered))
        q1, q3 = np.percentile(ordered, [25, 75])
        return cls(float(np.median(ordered)), (float(ordered[lo]), float(ordered[hi])), (float(q1), float(q3)))

    def text(self) -> str:
        return f"x{self.median:.3f} (95% CI x{self.ci95[0]:.3f}-{self.ci95[1]:.3f})"

    @classmethod
    def from_dict(cls, data: dict) -> "RatioSpread":
        return cls(data["ratio"], tuple(data["ratio_ci95"]), tuple(data["ratio_iqr"]))

    def to_dict(self) -> dict:
        return {"ratio": self.median, "ratio_ci95": list(self.ci95), "ratio_iqr": list(self.iqr),
                "verdict": self.verdict.value}


@dataclass(frozen=True)
class LatencyComparison:
    """Median latency of each model and each model's ratio to the first (``ratios[k - 1]``: model k)."""

    ms: tuple[float, ...]
    ratios: tuple[RatioSpread, ...]
    runs: int  # timed rounds (an even number: pairs); each model ran once per round
    threads: int
    provider: str
    seconds: float  # wall time of the measurement, warm-up included
    stopped: Stop

    # the usual case, two models: the original (before) and the pruned one (after)
    @property
    def ms_before(self) -> float:
        return self.ms[0]

    @property
    def ms_after(self) -> float:
        return self.ms[1]

    @property
    def spread(self) -> RatioSpread:
        return self.ratios[0]

    @property
    def ratio(self) -> float:
        return self.spread.median

    @property
    def verdict(self) -> Verdict:
        return self.spread.verdict

    @property
    def not_faster(self) -> bool:
        """True unless the second model is measurably faster (its whole interval below 1.0)."""
        return self.verdict is not Verdict.FASTER

    @property
    def busy(self) -> bool:
        """The two medians taken apart disagree with the paired ratio by more than 25%: other processes
        disturbed the runs (the ratio, from pairs, still holds; the milliseconds do not)."""
        apart = self.ms_after / self.ms_before if self.ms_before > 0 else math.inf
        return not 0.8 <= apart / self.ratio <= 1.25 if self.ratio > 0 else False

    def conditions(self) -> str:
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        stopped = "" if self.stopped is Stop.SPREAD else f", stopped at the {self.stopped.value}"
        busy = "; machine busy: ms medians disturbed (the ratio comes from paired rounds)" if self.busy else ""
        return f"{self.runs} runs, {threads}{stopped}{busy}"

    def text(self) -> str:
        """The ratio as the summary prints it, e.g. ``x0.433, 95% CI x0.425-0.441; 40 runs, 1 thread``."""
        label = "no measurable change: " if self.verdict is Verdict.NO_CHANGE else ""
        return (f"{label}x{self.ratio:.3f}, 95% CI x{self.spread.ci95[0]:.3f}-{self.spread.ci95[1]:.3f}; "
                f"{self.conditions()}")

    def warning(self) -> str | None:
        """One loud line when the second model is not measurably faster than the first; else None."""
        if not self.not_faster:
            return None
        what = ("SLOWER than the original" if self.verdict is Verdict.SLOWER
                else "not measurably faster than the original")
        return (f"the pruned model is {what}: latency {self.ms_before:.3g} ms -> {self.ms_after:.3g} ms, "
                f"{self.spread.text()} on {self.provider}, {self.conditions()}")

    def to_dict(self) -> dict:
        data = {"provider": self.provider, "threads": self.threads, "runs": self.runs, "seconds": self.seconds,
                "stopped_by": self.stopped.value, "ms": list(self.ms),
                "ratios": [r.to_dict() for r in self.ratios]}
        if len(self.ms) == 2:
            data.update(ms_before=self.ms_before, ms_after=self.ms_after, **self.spread.to_dict(),
                        not_faster=self.not_faster)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyComparison":
        """Back from :meth:`to_dict` (a report's ``latency``)."""
        return cls(tuple(data["ms"]), tuple(RatioSpread.from_dict(r) for r in data["ratios"]), data["runs"],
                   data["threads"], data["provider"], data["seconds"], Stop(data["stopped_by"]))


def compare(models: Sequence[Any], feeds: Mapping[str, np.ndarray], provider: str = "cpu",
            threads: int | None = None, options: LatencyOptions | None = None, *,
            clock: Clock = time.perf_counter, runner: Runner = run_once) -> LatencyComparison:
    """Time ``models`` side by side on ``feeds``; ratios are each model's latency over the first's.

    ``models``: onnx.ModelProto, Graph, paths, or sessions (anything with ``run``); sessions must have
    been made with ``threads`` threads (:func:`session`), models get such sessions here.
    ``threads`` (default ``options.threads``) applies to onnxruntime's CPU thread pools, also under
    ``provider='cuda'``. ``clock`` and ``runner`` are for tests: scripted timings.
    """
    options = options or LatencyOptions()
    options = (options if threads is None else replace(options, threads=threads)).check()
    threads = options.threads
    if len(models) < 2:
        raise OptionError(f"a latency comparison needs at least two models, got {len(models)}")
    sessions = [_timing_session(m, k, provider, threads) for k, m in enumerate(models)]
    start = clock()
    rounds, stopped = _rounds(sessions, feeds, options, clock, runner, start)
    times = np.asarray(rounds)  # rounds x models, seconds
    ms = tuple(float(np.median(times[:, k])) * 1000 for k in range(len(sessions)))
    ratios = tuple(RatioSpread.of(_paired(times, k)) for k in range(1, len(sessions)))
    return LatencyComparison(ms, ratios, len(rounds), threads, provider, clock() - start, stopped)


def _timing_session(model, index: int, provider: str, threads: int):
    if not hasattr(model, "run"):
        return session(model, provider, threads)
    made_with = session_threads(model)
    if made_with is not None and made_with != threads:
        raise OptionError(f"latency: session {index} runs {made_with or 'the default number of'} threads, the "
                          f"comparison asks for {threads}; make it with onnxprune.latency.session(model, "
                          f"provider, threads={threads})")
    return model


def _rounds(sessions, feeds, options: LatencyOptions, clock: Clock, runner: Runner,
            start: float) -> tuple[list[list[float]], Stop]:
    """Warm up, then pairs of interleaved rounds (the second in reverse order) until one rule stops them."""
    n = len(sessions)
    for _ in range(options.warmup):
        for k, s in enumerate(sessions):
            runner(k, s, feeds)
    rounds: list[list[float]] = []
    collecting = gc.isenabled()
    gc.disable()  # a collection inside one model's timing would land on the ratio
    try:
        while True:
            for order in (range(n), reversed(range(n))):
                times = [0.0] * n
                for k in order:
                    began = clock()
                    runner(k, sessions[k], feeds)
                    times[k] = clock() - began
                rounds.append(times)
            stopped = _stop(rounds, options, clock() - start)
            if stopped is not None:
                return rounds, stopped
    finally:
        if collecting:
            gc.enable()


def _stop(rounds: list[list[float]], options: LatencyOptions, elapsed: float) -> Stop | None:
    if len(rounds) >= options.max_runs:
        return Stop.RUNS
    if len(rounds) < max(options.min_runs, 1):
        return None
    times = np.asarray(rounds)
    if all(RatioSpread.of(_paired(times, k)).half_width <= options.spread for k in range(1, times.shape[1])):
        return Stop.SPREAD
    return Stop.TIME if elapsed >= options.max_seconds else None


def _paired(times: np.ndarray, k: int) -> np.ndarray:
    """Model k's time over model 0's, per pair of rounds (each summed over the pair: one round in each order)."""
    pairs = times[0::2] + times[1::2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return pairs[:, k] / pairs[:, 0]


@lru_cache(maxsize=4096)
def median_ci_ranks(n: int) -> tuple[int, int]:
    """0-based ranks (lo, hi) of the sorted values that bound a 95% confidence interval of the median.

    The interval [x_(j), x_(n+1-j)] covers the median with probability 1 - 2 P(B <= j - 1), B ~
    Binomial(n, 1/2): j is the largest rank that keeps that >= 95% (exact up to 1000 values, the normal
    approximation beyond). Below 6 values no j does: the interval is then [min, max].
    """
    tail = (1 - CONFIDENCE) / 2
    if n > 1000:
        j = math.floor(n / 2 - 1.959963984540054 * math.sqrt(n) / 2)
    else:
        j, cdf, pmf = 0, 0.0, 0.5 ** n
        while cdf + pmf <= tail:  # cdf: P(B <= j - 1)
            cdf += pmf
            pmf *= (n - j) / (j + 1)
            j += 1
    lo = max(j - 1, 0)
    return lo, n - 1 - lo
