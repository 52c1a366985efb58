"""Recovery without a training loop: after pruning, re-fit the pruned model to the original
on calibration data (bias compensation, least-squares reconstruction, BatchNorm
re-estimation; see the passes), and measure output fidelity on held-out samples before
and after.

A part of the calibration samples is held out: the passes fit on the rest, fidelity is
reported on the held-out part. If recovery made held-out fidelity worse (relative L2
error of the outputs), the unrecovered model is kept and the report says so (unless
``undo_if_worse`` is off).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .calibration import CalibrationSet
from .fidelity import Fidelity, measure
from .ir import Graph
from .options import RecoveryOptions
from .passes import PassResult
from .passes.bias_comp import BiasCompensation
from .passes.bn_stats import ReestimateBatchNorm
from .edits import EditMap
from .passes.lstsq import LeastSquaresRefit
from .registry import Registry


@dataclass
class RecoveryResult:
    methods: list[str]
    seconds: float = 0.0  # the passes (fitting), without the fidelity measurements
    fidelity_seconds: float = 0.0
    fit_samples: int = 0
    heldout_samples: int = 0
    fidelity_before: Fidelity | None = None
    fidelity_after: Fidelity | None = None
    passes: list[dict] = field(default_factory=list)  # name, changed, seconds, notes
    kept: bool = True  # False: recovery made held-out fidelity worse and was undone

    def to_dict(self) -> dict:
        return {"methods": self.methods, "seconds": self.seconds, "fidelity_seconds": self.fidelity_seconds, "fit_samples": self.fit_samples,
                "heldout_samples": self.heldout_samples, "kept": self.kept, "passes": self.passes,
                "fidelity_before": self.fidelity_before.to_dict() if self.fidelity_before else None,
                "fidelity_after": self.fidelity_after.to_dict() if self.fidelity_after else None}

    def summary(self) -> list[str]:
        changed = ", ".join(f"{p['name']} {p['changed']}" for p in self.passes)
        lines = [f"recovery  {'+'.join(self.methods)} on {self.fit_samples} samples in {self.seconds:.2f}s"
                 f" ({changed} layers)" + ("" if self.kept else "; made fidelity worse: NOT applied")]
        if self.fidelity_before is not None and self.fidelity_after is not None:
            lines.append(f"fidelity  before recovery: {self.fidelity_before.summary()}")
            lines.append(f"          after recovery:  {self.fidelity_after.summary()}")
        return lines


def worst_rel_l2(fidelity: Fidelity) -> float:
    return max((o.rel_l2 for o in fidelity.outputs), default=0.0)


def make_pass(method: str, original: Graph, data: CalibrationSet, edits: EditMap, registry: Registry,
              options: RecoveryOptions, progress: bool = False, fitted: frozenset[str] = frozenset(),
              graph: Graph | None = None):
    """The pass of one method on ``graph``; ``fitted``: tensors earlier passes already matched to the original."""
    if method == "bias":
        refitted = frozenset()
        if "lstsq" in options.methods and graph is not None:  # their bias would be overwritten
            refitted = frozenset(LeastSquaresRefit(original, data, edits, registry, options).targets(graph))
        return BiasCompensation(original, data, edits, registry, options, refitted)
    if method == "lstsq":
        return LeastSquaresRefit(original, data, edits, registry, options, progress)
    return ReestimateBatchNorm(data, edits, registry, options, original, progress, fitted)


def recover(original: Graph, pruned: Graph, edits: EditMap, data: CalibrationSet, registry: Registry,
            options: RecoveryOptions | None = None, progress: bool = False) -> tuple[Graph, RecoveryResult]:
    """Re-fit ``pruned`` to ``original`` on ``data``; return the new graph and what was done.

    ``edits`` maps ``original`` to ``pruned`` (every pass since loading, composed): which
    channels survive and what each layer's output stands for in the original."""
    options = (options or RecoveryOptions()).check()
    fit, held = data.split(options.holdout, options.seed)
    result = RecoveryResult(list(options.ordered), fit_samples=fit.n_samples, heldout_samples=held.n_samples)
    start = time.perf_counter()
    result.fidelity_before = measure(original, pruned, held, options.provider, options.batch_size)
    graph, fitted = pruned, frozenset()
    for method in options.ordered:  # bias, lstsq, bn
        t0 = time.perf_counter()
        outcome: PassResult = make_pass(method, original, fit, edits, registry, options, progress, fitted,
                                             graph).run(graph)
        notes = list(outcome.notes)
        if all(np.all(np.isfinite(v)) for v in outcome.graph.params.values() if v.dtype.kind == "f"):
            graph, fitted = outcome.graph, fitted | outcome.fitted
        else:
            notes.append("produced non-finite values: not applied")
        result.passes.append({"name": outcome.name, "changed": outcome.changed,
                              "seconds": time.perf_counter() - t0, "notes": notes})
    result.fidelity_after = measure(original, graph, held, options.provider, options.batch_size)
    if options.undo_if_worse and worst_rel_l2(result.fidelity_after) > worst_rel_l2(result.fidelity_before):
        graph, result.kept = pruned, False
    result.seconds = sum(p["seconds"] for p in result.passes)
    result.fidelity_seconds = time.perf_counter() - start - result.seconds
    return graph, result


def recovery_report(rounds: list[RecoveryResult]) -> dict:
    """The report entry for one or more rounds of recovery (``--steps``): the last round's
    result, with the total time and every round's result under ``rounds``."""
    report = rounds[-1].to_dict()
    report["seconds"] = sum(r.seconds for r in rounds)
    if len(rounds) > 1:
        report["rounds"] = [r.to_dict() for r in rounds]
    return report
