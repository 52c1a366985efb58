"""The width grid: which channel counts run fast, per provider and layer kind.

A pruned layer whose width falls off the provider's fast kernels can be slower
than the unpruned one: onnxruntime's CPU provider runs convolutions in a
blocked channel layout (NCHWc) only where the channel counts fit its block,
and takes a slower path elsewhere. Which widths are fast is measured, not
assumed: for every layer kind (depthwise, grouped, 1x1, kxk conv, GEMM) a
small model of that kind (from the rules, ``Registry.layer_benches``) is timed
at every width of :data:`WIDTHS`, and the grid step of the kind is the
smallest multiple whose widths are all *fast*: no wider width of the range
runs clearly quicker (:func:`choose_step`). Measured once per provider and
machine, then read from a cache file; where nothing is measured the
conservative :data:`DEFAULT_STEPS` hold.

A group's step (in its own channels) is the least common multiple of the
steps of every layer its channels are a width of (:func:`group_steps`): a
head of 16 dims under a GEMM step of 8 is already on the grid.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence

from .depgraph import DependencyGraph, EndKind, Group
from .errors import OptionError
from .registry import Registry
from .rules import Layer, LayerKind, call_rule

MODE_ENV = "ONNXPRUNE_WIDTH_GRID"  # "default": never measure (the built-in grid); "measured" (the default)
CACHE_ENV = "ONNXPRUNE_CACHE_DIR"  # where measured grids are kept (default: the user cache dir)
STEPS = (1, 2, 4, 8, 16, 32)  # the grid steps a measurement can find
WIDTHS = tuple(range(40, 113))  # widths timed per kind: every residue of the steps up to 16, several times
SLACK = 0.08  # a width is slow when a wider one (at most WINDOW wider) runs this much quicker
WINDOW = 16
RUNS = 15  # timed runs per width (interleaved across widths), median
FORMAT = 1  # version of the cache file


class GridMode(str, Enum):
    """Where the grid comes from (``--width-grid``)."""

    MEASURED = "measured"  # measured once per provider and machine, then cached
    DEFAULT = "default"  # the built-in DEFAULT_STEPS, no measuring

    def __str__(self) -> str:
        return self.value


class GridSource(str, Enum):
    DEFAULT = "default"
    MEASURED = "measured"
    CACHED = "cached"

    def __str__(self) -> str:
        return self.value


# Where nothing was measured: multiples of 8 for every convolution on CPU (onnxruntime's blocked
# layout uses blocks of 8 or 16 floats); on CUDA every width of a matrix product too (tensor cores
# pad fp16 channels to multiples of 8).
DEFAULT_STEPS = {
    "cpu": {LayerKind.DEPTHWISE: 8, LayerKind.GROUPED: 8, LayerKind.CONV1X1: 8, LayerKind.CONV: 8,
            LayerKind.GEMM: 1},
    "cuda": {kind: 8 for kind in LayerKind},
}


@dataclass(frozen=True)
class WidthGrid:
    """Grid step per layer kind for one provider (a kind not listed: any width)."""

    provider: str
    steps: dict = field(default_factory=dict)  # LayerKind -> step
    source: GridSource = GridSource.DEFAULT
    timings: dict = field(default_factory=dict, compare=False)  # LayerKind -> {width: seconds}, when measured

    def step(self, kind: LayerKind) -> int:
        return int(self.steps.get(kind, 1))

    def coarser(self, factor: int) -> "WidthGrid":
        """Every step times ``factor`` (a kind with step 1 stays free): the grid the speed check
        falls back on when a plan on this one is not faster."""
        return WidthGrid(self.provider, {k: s * factor if s > 1 else 1 for k, s in self.steps.items()},
                         self.source)

    def finer(self, divisor: int) -> "WidthGrid":
        """Every step divided by ``divisor`` (at least 1): where a target cannot be met on the grid."""
        return WidthGrid(self.provider, {k: max(1, s // divisor) for k, s in self.steps.items()}, self.source)

    def describe(self) -> str:
        steps = ", ".join(f"{k} {self.step(k)}" for k in LayerKind)
        return f"{self.provider} ({self.source}): {steps}"

    def to_dict(self) -> dict:
        return {"format": FORMAT, "provider": self.provider, "source": str(self.source),
                "steps": {str(k): int(s) for k, s in self.steps.items()},
                "timings_s": {str(k): {str(w): t for w, t in sorted(v.items())} for k, v in self.timings.items()}}

    @staticmethod
    def from_dict(data: dict, source: GridSource = GridSource.CACHED) -> "WidthGrid":
        if data.get("format") != FORMAT:
            raise ValueError("unknown width grid format")
        steps = {LayerKind(k): int(s) for k, s in data["steps"].items()}
        if any(s < 1 for s in steps.values()):
            raise ValueError("grid steps must be >= 1")
        timings = {LayerKind(k): {int(w): float(t) for w, t in v.items()} for k, v in data.get("timings_s", {}).items()}
        return WidthGrid(str(data["provider"]), steps, source, timings)


def default_grid(provider: str = "cpu") -> WidthGrid:
    return WidthGrid(provider, dict(DEFAULT_STEPS.get(provider, DEFAULT_STEPS["cpu"])), GridSource.DEFAULT)


# ----------------------------------------------------------------------------- from timings to a grid
def slow_widths(timings: dict[int, float], slack: float = SLACK, window: int = WINDOW) -> set[int]:
    """Widths that a wider measured one, at most ``window`` wider, beats by more than ``slack``
    (they waste channels: the wider width is quicker)."""
    return {w for w in timings if any(timings[v] < timings[w] * (1.0 - slack)
                                      for v in timings if w < v <= w + window)}


def choose_step(timings: dict[int, float], slack: float = SLACK, window: int = WINDOW) -> int:
    """The smallest step of :data:`STEPS` whose multiples in the measured range are fast.

    Only multiples with a full window of wider widths still in the range are
    judged, and a step passes when at most a quarter of them are slow (one
    noisy timing does not move the grid; a real block size makes half or more
    of a too-fine step's multiples slow). A range too short to judge a step
    skips it.
    """
    if not timings:
        return 1
    slow = slow_widths(timings, slack, window)
    top = max(timings)
    for step in STEPS:
        judged = [w for w in timings if w % step == 0 and w + window <= top]
        if judged and sum(w in slow for w in judged) <= len(judged) // 4:
            return step
    return STEPS[-1]


Timer = Callable[[LayerKind, Sequence[int]], dict[int, float]]  # kind, widths -> seconds per run


def measure(registry: Registry, provider: str = "cpu", timer: Timer | None = None,
            widths: Sequence[int] = WIDTHS, slack: float = SLACK) -> WidthGrid:
    """Time every layer kind the rules can build at every width; the grid of their steps.

    ``timer`` gives seconds per run for each width (default: onnxruntime on
    ``provider``, one thread); tests inject timings here.
    """
    timer = timer or ort_timer(registry, provider)
    steps, timings = {}, {}
    for kind in registry.layer_benches():
        timings[kind] = timer(kind, widths)
        steps[kind] = choose_step(timings[kind], slack)
    return WidthGrid(provider, steps, GridSource.MEASURED, timings)


def ort_timer(registry: Registry, provider: str = "cpu", runs: int = RUNS, threads: int = 1) -> Timer:
    """Median seconds per run of each width's model, runs interleaved across widths (same machine load)."""
    from .validate import make_inputs, session  # late: validate imports onnxruntime

    benches = registry.layer_benches()

    def timer(kind: LayerKind, widths: Sequence[int]) -> dict[int, float]:
        graphs = {w: benches[kind](w) for w in widths}
        runs_of = {w: (session(g, provider, threads=threads), make_inputs(g)) for w, g in graphs.items()}
        times: dict[int, list[float]] = {w: [] for w in widths}
        order = list(runs_of.items())
        for attempt in range(runs + 3):  # three warm-up rounds; every other round in reverse order
            for w, (s, feeds) in (order if attempt % 2 else order[::-1]):
                start = time.perf_counter()
                s.run(None, feeds)
                if attempt >= 3:
                    times[w].append(time.perf_counter() - start)
        return {w: statistics.median(t) for w, t in times.items()}
    return timer


# ----------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onnxprune"


def machine_key(provider: str) -> str:
    """What the measurement depends on: the CPU (model and flags), onnxruntime's version, the provider."""
    import onnxruntime
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith(("model name", "flags"))]
        cpu += "|".join(sorted(set(lines)))
    except OSError:
        pass
    text = "\n".join([provider, platform.machine(), cpu, onnxruntime.__version__, str(FORMAT)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(provider: str, directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / f"widthgrid-{provider}-{machine_key(provider)}.json"


def load(registry: Registry, provider: str = "cpu", mode: GridMode | str | None = None,
         directory: Path | None = None, timer: Timer | None = None) -> WidthGrid:
    """The grid for ``provider``: the default one (``mode`` default, or ONNXPRUNE_WIDTH_GRID=default),
    else the cached measurement of this machine, else measured now and cached.

    A cache that cannot be read is measured again; one that cannot be written is
    only not kept (the grid is still used).
    """
    chosen = mode or os.environ.get(MODE_ENV) or GridMode.MEASURED
    try:
        mode = GridMode(chosen)
    except ValueError:
        raise OptionError(f"width grid '{chosen}' (--width-grid or ${MODE_ENV}): choose from "
                          f"{', '.join(m.value for m in GridMode)}") from None
    if mode is GridMode.DEFAULT:
        return default_grid(provider)
    path = cache_path(provider, directory)
    try:
        return WidthGrid.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    grid = measure(registry, provider, timer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        staged.write_text(json.dumps(grid.to_dict(), indent=1), encoding="utf-8")
        os.replace(staged, path)
    except OSError:
        pass
    return grid


# ----------------------------------------------------------------------------- groups
def group_steps(dg: DependencyGraph, grid: WidthGrid) -> dict[int, int]:
    """Per prunable group: the step its kept channel count must be a multiple of (1: any).

    A group channel that is ``m`` channels of a layer's width (a head of D dims:
    m = D; a grouped conv's in-group position: one per group) needs
    ``step / gcd(step, m)`` group channels per grid step. A group whose width is
    already off its grid (its layers already take the slow path) keeps any width.
    """
    layers: dict[str, Layer | None] = {}
    steps = {}
    for group in dg.prunable_groups():
        step = 1
        for end in group.ends:
            if end.kind != EndKind.OP or end.port is None:
                continue
            if end.node not in layers:
                layers[end.node] = _layer(dg, end.node)
            layer = layers[end.node]
            if layer is None or end.port not in layer.ports:
                continue
            units = _per_channel(group, end)
            if layer.groups > 1 and units % layer.groups == 0:
                units //= layer.groups
            kind_step = grid.step(layer.kind)
            step = math.lcm(step, kind_step // math.gcd(kind_step, max(1, units)))
        steps[group.id] = step if group.size % step == 0 else 1
    return steps


def layer_of(dg: DependencyGraph, node: str) -> Layer | None:
    """The node as a compute layer (its kind and width ports), or None for other nodes."""
    return _layer(dg, node)


def _layer(dg: DependencyGraph, node: str) -> Layer | None:
    spec = dg.spec(node)
    if spec is None or spec.layer is None:
        return None
    return call_rule("layer", dg.graph.node_by_name[node], spec.layer, dg.view(node), strict=dg.strict)


def _per_channel(group: Group, end) -> int:
    """How many indices of ``end`` one group channel occupies."""
    slots = group.slots.get(end)
    return int(slots.start[1] - slots.start[0]) if slots is not None and group.size else 1
