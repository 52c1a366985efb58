"""Pruning options as one object: the CLI, the API and the planner share it.

Every option is checked in :meth:`PruneOptions.check` (one clear error naming
the option), so callers can fail before the slow model load.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace

from .errors import PlanError


@dataclass(frozen=True)
class PruneOptions:
    ratio: float = 0.5  # fraction of each prunable group's channels to remove
    criterion: str = "l2"  # a name in onnxprune.importance.CRITERIA
    round_to: int = 1  # keep channel counts multiples of this
    ignore: tuple[str, ...] = field(default_factory=tuple)  # regexes: protect these nodes' output channels
    seed: int = 0  # random criterion and random inputs

    def __post_init__(self) -> None:
        if not isinstance(self.ignore, tuple):
            object.__setattr__(self, "ignore", tuple(self.ignore or ()))

    def check(self) -> "PruneOptions":
        """Raise PlanError for an unusable option; return self so calls chain."""
        from .importance import CRITERIA  # late: importance imports the engine
        if not 0.0 <= self.ratio < 1.0:
            raise PlanError(f"--ratio must be in [0, 1), got {self.ratio}")
        if self.criterion not in CRITERIA:
            raise PlanError(f"unknown criterion '{self.criterion}' (choose from {', '.join(CRITERIA)})")
        if self.round_to < 1:
            raise PlanError(f"--round-to must be >= 1, got {self.round_to}")
        if self.seed < 0:
            raise PlanError(f"--seed must be >= 0, got {self.seed}")
        for pattern in self.ignore:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise PlanError(f"--ignore '{pattern}': bad regular expression ({exc})") from None
        return self

    def with_(self, **changes) -> "PruneOptions":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ignore"] = list(self.ignore)
        return data
