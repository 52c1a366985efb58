"""How close a pruned model's outputs stay to the original's, on the same samples.

Reported in every run (held-out calibration samples, or random inputs without
calibration data): per output, the cosine similarity of each sample's output
to the original's (mean and worst), the largest absolute difference, the
relative L2 error, and, where an output looks like class scores, the fraction
of samples (or positions) whose arg-max agrees. For sequences ([N, T, C]
probabilities: CTC, tokens) most positions are one background class (the CTC
blank, padding), so arg-max agreement stays high even when no character is
read right; the agreement on the other positions is reported beside it.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np

from .activations import DEFAULT_BATCH, stream
from .calibration import CalibrationSet
from .class_scores import class_scores, dominant_class
from .ir import Graph


@dataclass
class OutputAgreement:
    name: str
    cosine: float  # mean over samples of cos(original, pruned)
    cosine_min: float  # worst sample
    max_abs: float  # largest |original - pruned| over every element
    rel_l2: float  # ||pruned - original|| / ||original|| over the whole output
    top1: float | None = None  # arg-max agreement, for class-score-like outputs
    # sequences: arg-max agreement on positions where the original does not predict the
    # background class (the most frequent one, when it holds most positions: blank, padding)
    top1_foreground: float | None = None
    background_class: int | None = None


@dataclass
class Fidelity:
    outputs: list[OutputAgreement] = field(default_factory=list)
    samples: int = 0
    data: str = ""

    @property
    def cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def top1(self) -> float | None:
        values = [o.top1 for o in self.outputs if o.top1 is not None]
        return min(values) if values else None

    @property
    def top1_foreground(self) -> float | None:
        values = [o.top1_foreground for o in self.outputs if o.top1_foreground is not None]
        return min(values) if values else None

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(cosine_worst_output=self.cosine, max_abs=self.max_abs, top1=self.top1,
                    top1_foreground=self.top1_foreground)
        return data

    def summary(self) -> str:
        text = f"cosine {self.cosine:.4f}, max |err| {self.max_abs:.3g}"
        if self.top1 is not None:
            text += f", top-1 agreement {100 * self.top1:.1f}%"
        if self.top1_foreground is not None:
            text += f" ({100 * self.top1_foreground:.1f}% off the background class)"
        return text + f"  [{self.samples} samples: {self.data}]"


class AgreementAccumulator:
    """One output's agreement with its reference, accumulated batch by batch (no outputs kept)."""
    def __init__(self, name: str):
        self.name = name
        self.cosines: list[np.ndarray] = []
        self.max_abs = 0.0
        self.err_sq = 0.0
        self.ref_sq = 0.0
        self.agree = 0
        self.positions = 0
        self.classifier = True
        self.sequence = True
        self.by_class: np.ndarray | None = None  # positions per original arg-max class
        self.agree_by_class: np.ndarray | None = None

    def update(self, ref: np.ndarray, got: np.ndarray) -> None:
        ref64, got64 = np.asarray(ref, np.float64), np.asarray(got, np.float64)
        a, b = ref64.reshape(len(ref64), -1), got64.reshape(len(got64), -1)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        dot = (a * b).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where((na == 0) & (nb == 0), 1.0, dot / np.maximum(na * nb, 1e-300))
        self.cosines.append(np.nan_to_num(cos, nan=0.0))
        diff = np.abs(a - b)
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.err_sq += float(np.square(diff).sum())
        self.ref_sq += float(np.square(a).sum())
        self.classifier = self.classifier and class_scores(ref64)
        if self.classifier:
            ref_arg, got_arg = ref64.argmax(axis=-1), got64.argmax(axis=-1)
            self.agree += int((ref_arg == got_arg).sum())
            self.positions += int(np.prod(ref64.shape[:-1]))
            self.sequence = self.sequence and ref64.ndim == 3
            if self.sequence:
                classes = ref64.shape[-1]
                counts = np.bincount(ref_arg.reshape(-1), minlength=classes)
                agreed = np.bincount(ref_arg.reshape(-1), weights=(ref_arg == got_arg).reshape(-1), minlength=classes)
                self.by_class = counts if self.by_class is None else self.by_class + counts
                self.agree_by_class = agreed if self.agree_by_class is None else self.agree_by_class + agreed

    def result(self) -> OutputAgreement:
        cos = np.concatenate(self.cosines) if self.cosines else np.ones(1)
        rel = float(np.sqrt(self.err_sq / self.ref_sq)) if self.ref_sq > 0 else float(self.err_sq > 0)
        top1 = self.agree / self.positions if self.classifier and self.positions else None
        foreground = background = None
        if top1 is not None and self.sequence and self.by_class is not None:
            background = dominant_class(self.by_class)
            if background is not None:
                rest = self.by_class.sum() - self.by_class[background]
                foreground = float((self.agree_by_class.sum() - self.agree_by_class[background]) / rest) if rest else 1.0
        return OutputAgreement(self.name, float(cos.mean()), float(cos.min()), self.max_abs, rel, top1,
                               foreground, background)


HELD_REFERENCE_BYTES = 256 << 20  # the original's outputs held while the pruned model runs


def _drain(held: list):
    """Yield and drop the held batches, oldest first, so each is freed once compared."""
    held.reverse()
    while held:
        yield held.pop()


def measure(original: Graph, pruned: Graph, data: CalibrationSet, provider: str = "cpu",
            batch_size: int = DEFAULT_BATCH) -> Fidelity:
    """Run both models on ``data`` batch by batch and compare every output.

    The original runs first and its outputs are held (up to ``HELD_REFERENCE_BYTES``), so its
    onnxruntime session is gone before the pruned model's starts: two sessions of a large model
    at once would double the peak memory. Outputs too large to hold are compared batch by batch
    with both sessions open."""
    names = [v.name for v in original.outputs]
    accs = {name: AgreementAccumulator(name) for name in names}
    ref_stream = stream(original, [], data, provider, batch_size)
    held, size = [], 0
    for ref in ref_stream:
        held.append({name: ref[name] for name in names})
        size += sum(np.asarray(ref[name]).nbytes for name in names)
        if size > HELD_REFERENCE_BYTES:
            break
    else:
        ref_stream = iter(())  # exhausted: the original's session is released
    got_stream = stream(pruned, [], data, provider, batch_size)
    for ref, got in zip(itertools.chain(_drain(held), ref_stream), got_stream):
        for name in names:
            accs[name].update(ref[name], got[name])
    return Fidelity([accs[n].result() for n in names], data.n_samples, data.source)
