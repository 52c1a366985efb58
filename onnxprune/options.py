"""Pruning options as one object: the CLI, the API and the planner share it.

Every option is checked in :meth:`PruneOptions.check` (one clear error naming
the option), so callers can fail before the slow model load.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from .errors import OptionError


class BudgetMode(str, Enum):
    """How a ratio or size target is shared out among the groups (``--budget``; see budget.py)."""

    UNIFORM = "uniform"  # every group loses the same fraction
    GLOBAL = "global"  # channels ranked across groups by normalised score (--global)
    SENSITIVITY = "sensitivity"  # where the measured output error per saved MAC is lowest (sensitivity_budget.py)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class PruneOptions:
    ratio: float = 0.5  # fraction of each prunable group's channels to remove
    criterion: str = "l2"  # a name in onnxprune.importance.CRITERIA
    # keep channel counts multiples of this in every group; None: each group's width-grid step
    # (onnxprune.widthgrid: the widths the provider runs fast, per layer kind); 1: exact widths
    round_to: int | None = None
    width_grid: str | None = None  # a widthgrid.GridMode: measured (and cached) or default; None: $ONNXPRUNE_WIDTH_GRID
    # with --target-macs/params: time the plan against the original and, where it is not faster,
    # search again on coarser width grids for one at the same budget that is (None: on, unless
    # $ONNXPRUNE_SPEED_CHECK=0)
    never_slower: bool | None = None
    ignore: tuple[str, ...] = field(default_factory=tuple)  # regexes: protect these nodes' output channels
    seed: int = 0  # random criterion and random inputs
    global_rank: bool = False  # rank channels across groups (normalized scores) instead of a uniform ratio
    # a BudgetMode value; None: global with global_rank, else uniform (see budget_mode)
    budget: str | None = None
    max_ratio: float = 1.0  # no group loses more than this fraction of its channels
    ratio_for: tuple[tuple[str, float], ...] = field(default_factory=tuple)  # (regex, ratio): per-group overrides
    target_macs: float | None = None  # search the ratio that leaves this fraction of the MACs
    target_params: float | None = None  # ... of the parameters
    target_latency: float | None = None  # ... of the measured latency
    steps: int = 1  # prune in this many rounds, re-scoring between them
    latency: "LatencyOptions" = field(default_factory=lambda: LatencyOptions())  # how --target-latency times
    # what is pruned, by group kind (Group.kind): attention heads, other channels (MLP width,
    # conv channels), and the hidden size (groups through normalization statistics: inexact)
    prune_heads: bool = True
    prune_channels: bool = True
    prune_hidden: bool = False
    # attention prunes head_dim (the same dims of every head) instead of whole heads; a different
    # analysis of the model (rules.Analysis), so the two do not mix in one round
    prune_head_dim: bool = False
    head_ratio: float | None = None  # ratio for attention groups, heads or head_dim (default: --ratio)
    depth: int = 0  # remove this many residual blocks (the least important) before width pruning
    depth_score: str | None = None  # weights, influence or output (onnxprune.depth); default: output with data
    # UPDP: replace this many activations between two linear layers by the identity (a fraction of
    # the candidates where < 1), those that change the outputs least on --calib, so the layers merge
    remove_activations: float = 0.0
    # --target-latency (without --depth; in each round of --steps): search how many blocks go together with the
    # width (onnxprune.depthwidth); False: width only
    depth_search: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.ignore, tuple):
            object.__setattr__(self, "ignore", tuple(self.ignore or ()))
        pairs = tuple(parse_ratio_for(p) if isinstance(p, str) else (p[0], p[1]) for p in self.ratio_for or ())
        object.__setattr__(self, "ratio_for", pairs)

    @property
    def target(self) -> tuple[str, float] | None:
        """The one size target asked for, as (metric, fraction): metric is macs, params or latency."""
        for metric in TARGET_METRICS:
            value = getattr(self, f"target_{metric}")
            if value is not None:
                return metric, value
        return None

    @property
    def budget_mode(self) -> BudgetMode:
        if self.budget is not None:
            return BudgetMode(self.budget)
        return BudgetMode.GLOBAL if self.global_rank else BudgetMode.UNIFORM

    def check(self) -> "PruneOptions":
        """Raise OptionError (a PlanError, exit code 2) for an unusable option; return self so calls chain."""
        from .importance import CRITERIA  # late: importance imports the engine
        if not 0.0 <= self.ratio < 1.0:
            raise OptionError(f"--ratio must be in [0, 1), got {self.ratio}")
        if self.criterion not in CRITERIA:
            raise OptionError(f"unknown criterion '{self.criterion}' (choose from {', '.join(CRITERIA)})")
        if self.round_to is not None and self.round_to < 1:
            raise OptionError(f"--round-to must be >= 1, got {self.round_to}")
        if self.width_grid is not None:
            from .widthgrid import GridMode
            if self.width_grid not in {m.value for m in GridMode}:
                raise OptionError(f"--width-grid must be one of {', '.join(m.value for m in GridMode)}, "
                                  f"got {self.width_grid}")
        if self.seed < 0:
            raise OptionError(f"--seed must be >= 0, got {self.seed}")
        if self.budget is not None and self.budget not in {m.value for m in BudgetMode}:
            raise OptionError(f"--budget must be one of {', '.join(m.value for m in BudgetMode)}, got {self.budget}")
        if self.global_rank and self.budget_mode is not BudgetMode.GLOBAL:
            raise OptionError(f"--global is --budget global: drop it or --budget {self.budget}")
        for pattern in self.ignore:
            _check_regex("--ignore", pattern)
        if not 0.0 < self.max_ratio <= 1.0:
            raise OptionError(f"--max-ratio must be in (0, 1], got {self.max_ratio}")
        for pattern, ratio in self.ratio_for:
            _check_regex("--ratio-for", pattern)
            if not 0.0 <= ratio < 1.0:
                raise OptionError(f"--ratio-for {pattern}={ratio}: the ratio must be in [0, 1)")
        asked = [m for m in TARGET_METRICS if getattr(self, f"target_{m}") is not None]
        if len(asked) > 1:
            raise OptionError(f"give one target, not {' and '.join('--target-' + m for m in asked)}")
        for metric in asked:
            value = getattr(self, f"target_{metric}")
            if not 0.0 < value <= 1.0:
                raise OptionError(f"--target-{metric} must be a fraction in (0, 1], got {value}")
        self.latency.check()
        if self.target_latency is not None and self.latency.min_runs < 1:
            raise OptionError(f"--target-latency needs timed runs (--runs >= 1), got {self.latency.min_runs}")
        if self.steps < 1:
            raise OptionError(f"--steps must be >= 1, got {self.steps}")
        if self.depth < 0:
            raise OptionError(f"--depth must be >= 0, got {self.depth}")
        from .depth import DEPTH_SCORES
        if self.depth_score is not None and self.depth_score not in DEPTH_SCORES:
            raise OptionError(f"unknown --depth-score '{self.depth_score}' (choose from {', '.join(DEPTH_SCORES)})")
        if self.remove_activations < 0 or (self.remove_activations >= 1 and self.remove_activations % 1):
            raise OptionError("--remove-activations must be a count (1, 2, ...) or a fraction in (0, 1), "
                              f"got {self.remove_activations:g}")
        if self.head_ratio is not None and not 0.0 <= self.head_ratio < 1.0:
            raise OptionError(f"--head-ratio must be in [0, 1), got {self.head_ratio}")
        return self

    def prunes(self, kind: str) -> bool:
        """Whether groups of this kind (see Group.kind) may be pruned."""
        return {"heads": self.prune_heads, "head_dim": self.prune_head_dim,
                "hidden": self.prune_hidden}.get(kind, self.prune_channels)

    def with_(self, **changes) -> "PruneOptions":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ignore"] = list(self.ignore)
        data["ratio_for"] = [f"{pattern}={ratio}" for pattern, ratio in self.ratio_for]
        return data


TARGET_METRICS = ("macs", "params", "latency")


@dataclass(frozen=True)
class LatencyOptions:
    """How latency is measured (onnxprune.latency): fixed threads, warm-up, then interleaved rounds (in
    pairs, the second in reverse order: runs are rounded up to even) until the ratio's 95% confidence
    interval is narrow enough, the time limit or ``max_runs``."""

    threads: int = 1  # onnxruntime intra- and inter-op threads of every timed session
    min_runs: int = 20  # interleaved rounds at least (0: no latency measured)
    max_runs: int = 1000  # rounds at most
    max_seconds: float = 10.0  # stop after this long (once min_runs are done), however wide the spread
    spread: float = 0.02  # stop when the ratio's 95% CI half-width is within this fraction of the ratio
    warmup: int = 5  # untimed runs of each model first

    def check(self) -> "LatencyOptions":
        if self.threads < 1:
            raise OptionError(f"--threads must be >= 1, got {self.threads}")
        if self.min_runs < 0:
            raise OptionError(f"--runs must be >= 0, got {self.min_runs}")
        if self.max_runs < max(self.min_runs, 1):
            raise OptionError(f"--max-runs must be >= --runs and >= 1, got {self.max_runs} (--runs {self.min_runs})")
        if not self.max_seconds > 0:
            raise OptionError(f"--latency-time must be > 0 seconds, got {self.max_seconds}")
        if not 0.0 < self.spread < 1.0:
            raise OptionError(f"--latency-spread must be in (0, 1), got {self.spread}")
        if self.warmup < 0:
            raise OptionError(f"latency warm-up runs must be >= 0, got {self.warmup}")
        return self


def default_criterion(calib: bool, recover: bool = False) -> str:
    """The criterion when none is named: the best one measured for what the user gives (README,
    Recovery): reconstruction when recovery re-fits on --calib data (it assumes that re-fit),
    output on --calib data alone, the weight norm l2 without data."""
    if calib:
        return "reconstruction" if recover else "output"
    return "l2"

def default_budget(calib: bool, target: bool, recover: bool = False, global_rank: bool = False) -> BudgetMode:
    """The budget when none is named: global with --global; sensitivity for a size target with --calib
    data to measure it on and no --recover (README, Budgets: far more accurate than uniform there; after
    recovery, no better in the measurements and several times slower); else uniform."""
    if global_rank:
        return BudgetMode.GLOBAL
    return BudgetMode.SENSITIVITY if calib and target and not recover else BudgetMode.UNIFORM


# Below this output cosine (worst output, against the original) a pruned model has lost most of what its
# outputs said: the summary and report warn, --strict refuses. Typical prunes without recovery land at
# 0.6-0.95; 0.0 is a model that computes something else.
MIN_COSINE = 0.5


def parse_ratio_for(text: str) -> tuple[str, float]:
    """``REGEX=R`` as (regex, ratio); the last '=' separates them, so the regex may hold '='."""
    pattern, sep, ratio = str(text).rpartition("=")
    try:
        if not sep or not pattern:
            raise ValueError
        return pattern, float(ratio)
    except ValueError:
        raise OptionError(f"--ratio-for '{text}': expected REGEX=RATIO, e.g. 'layer4.*=0.3'") from None


def parse_shapes(values: list[str] | None) -> dict[str, list[int]]:
    """``--input-shape``/``--shapes`` values as {input name: dims}.

    Each value holds one or more ``NAME:D1xD2x...`` separated by commas (trtexec's ``--shapes``
    form); ``NAME:`` is a scalar. The last ':' splits, so names may hold ':' (TensorFlow's ``x:0``).
    """
    shapes: dict[str, list[int]] = {}
    for value in values or []:
        for spec in str(value).split(","):
            name, sep, dims = spec.strip().rpartition(":")
            try:
                if not sep or not name:
                    raise ValueError
                parsed = [int(d) for d in dims.lower().split("x")] if dims else []
                if any(d <= 0 for d in parsed):
                    raise ValueError
            except ValueError:
                raise OptionError(f"--input-shape '{spec}': expected NAME:D1xD2x..., e.g. input:1x3x224x224 "
                                  "(several separated by commas; NAME: for a scalar)") from None
            if shapes.get(name, parsed) != parsed:
                raise OptionError(f"--input-shape: '{name}' is given two shapes")
            shapes[name] = parsed
    return shapes


def _check_regex(option: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise OptionError(f"{option} '{pattern}': bad regular expression ({exc})") from None


RECOVERY_METHODS = ("bias", "lstsq", "bn")  # the order they run in


class RowWeighting(str, Enum):
    """How least squares weighs its rows (output positions; see passes/weights.py).

    AUTO: rows at positions that do not matter weigh ``RecoveryOptions.background_weight``:
    padding, where the model has an attention-mask input (an integer or boolean input of rank 2
    whose name holds "mask"), and positions where the original model's sequence output
    ([N, T, classes] scores) picks the class most positions of the batch pick (CTC's blank).
    NONE: every row weighs 1."""

    AUTO = "auto"
    NONE = "none"


@dataclass(frozen=True)
class RecoveryOptions:
    """How recovery re-fits a pruned model to the original on calibration data."""

    methods: tuple[str, ...] = RECOVERY_METHODS  # any of RECOVERY_METHODS; they run in that order
    ridge: float = 1e-3  # least squares: ridge, relative to the mean diagonal of the Gram matrix
    max_rows: int = 4096  # rows (output positions) sampled per batch and layer, to bound memory
    batch_size: int = 16
    holdout: float = 0.2  # fraction of the calibration samples held out to report fidelity
    # re-estimate BN statistics as the pruned-vs-original shift on the data; None: shift where blocks
    # were removed (most normalizations then keep inputs like the original's, and their trained
    # statistics stay better than the calibration data's), plain re-estimation otherwise
    bn_shift: bool | None = None
    undo_if_worse: bool = True  # keep the unrecovered model if held-out fidelity got worse
    seed: int = 0
    provider: str = "cpu"
    # passes over the data for the fits that run front to back: 0, one per level of layers (the
    # sequential fit); P > 0: least squares fits every layer at once from the original's inputs, then
    # re-fits the last P-1 levels on the pruned model's, and BN re-estimation measures its levels in
    # P runs (faster; less faithful on deep models: see passes/lstsq.py)
    passes: int = 0
    # statistics held at once (X^T X, X^T Y per layer), MiB: a pass is cut where they would exceed it
    statistics_mib: int = 1024
    refit_shifted: bool = True  # least squares also on layers whose inputs changed though they kept every channel
    # least squares also re-fits the scale and shift of normalizations whose statistics pruning changed
    # (LayerNorm over a pruned hidden size: passes/norms.py). Off: exact where the statistics change by a
    # constant factor, but on the random-weight test Transformers held-out error moved by 1-2% either
    # way (post-norm BERT: slightly worse on every seed tried)
    refit_norms: bool = False
    weighting: RowWeighting = RowWeighting.AUTO
    background_weight: float = 0.1  # a row's weight at a position that does not matter (see RowWeighting)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "weighting", RowWeighting(self.weighting))
        except ValueError:
            raise OptionError(f"recovery weighting: unknown {self.weighting!r} "
                              f"(choose from {', '.join(w.value for w in RowWeighting)})") from None
        if isinstance(self.methods, str):
            object.__setattr__(self, "methods", tuple(m.strip() for m in self.methods.split(",") if m.strip()))
        else:
            object.__setattr__(self, "methods", tuple(self.methods))

    def check(self) -> "RecoveryOptions":
        unknown = [m for m in self.methods if m not in RECOVERY_METHODS]
        if unknown or not self.methods:
            raise OptionError(f"--recover-methods: unknown method(s) {', '.join(unknown) or '(none given)'} "
                            f"(choose from {', '.join(RECOVERY_METHODS)})")
        if not self.ridge >= 0:
            raise OptionError(f"recovery ridge must be >= 0, got {self.ridge}")
        if self.max_rows < 1 or self.batch_size < 1:
            raise OptionError("recovery max_rows and batch_size must be >= 1")
        if not 0.0 <= self.holdout < 1.0:
            raise OptionError(f"recovery holdout must be in [0, 1), got {self.holdout}")
        if self.passes < 0:
            raise OptionError(f"--recover-passes must be >= 0, got {self.passes}")
        if self.statistics_mib < 1:
            raise OptionError(f"recovery statistics_mib must be >= 1, got {self.statistics_mib}")
        if not 0.0 <= self.background_weight <= 1.0:
            raise OptionError(f"recovery background_weight must be in [0, 1], got {self.background_weight}")
        return self

    @property
    def ordered(self) -> tuple[str, ...]:
        return tuple(m for m in RECOVERY_METHODS if m in self.methods)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["methods"] = list(self.ordered)
        data["weighting"] = self.weighting.value
        return data


@dataclass(frozen=True)
class SaveOptions:
    """How the output model is written: weights in ``<output>.data`` next to it when the input had
    external data, when the output passes protobuf's 2 GB limit, or always (``external_data``:
    ``--external-data``)."""

    external_data: bool = False

    def external(self, input_external: bool, over_proto_limit: bool) -> bool:
        return self.external_data or input_external or over_proto_limit


FUSIONS = ("passthrough", "affine", "parallel", "linear")  # the order they run in


@dataclass(frozen=True)
class FuseOptions:
    """Which exact rewrites fusion runs (``--fuse``, ``onnxprune fuse``): drop pass-through
    nodes, fold affine nodes (BatchNorm, Mul/Add by constants) into linear layers, merge
    parallel branches (RepVGG), merge consecutive linear layers."""

    kinds: tuple[str, ...] = FUSIONS

    def __post_init__(self) -> None:
        kinds = self.kinds.split(",") if isinstance(self.kinds, str) else self.kinds
        object.__setattr__(self, "kinds", tuple(k.strip() for k in kinds if k.strip()))

    def check(self) -> "FuseOptions":
        unknown = [k for k in self.kinds if k not in FUSIONS]
        if unknown or not self.kinds:
            raise OptionError(f"--fuse-kinds: unknown kind(s) {', '.join(unknown) or '(none given)'} "
                              f"(choose from {', '.join(FUSIONS)})")
        return self

    @property
    def ordered(self) -> tuple[str, ...]:
        return tuple(k for k in FUSIONS if k in self.kinds)
