"""Recovery benchmark: what bias compensation, least squares and BN re-estimation win back.

    python scripts/bench_recovery.py                        # digits CNN at --ratio 0.3 and 0.45 (MACs ~x0.5, ~x0.3)
    python scripts/bench_recovery.py --models models/resnet_small.onnx models/mobilenetv2_small.onnx
    python scripts/bench_recovery.py --ratios '' --sets digits orientation --variants per-level passes=2

``--sets`` (model sets of scripts/bench_accuracy.py: labelled held-out data) compares
recovery variants (RecoveryOptions fields, ``per-level`` = one pass per level of layers, the
sequential fit) side by side in one run: held-out accuracy, fidelity and recovery time, on the
same pruned model per target MACs.

On the digits CNN (models/digits: trained, with calibration and held-out splits)
it prints held-out task accuracy for no recovery, each method alone and all
together; on other models (random weights, no labels) output fidelity on
held-out random-input calibration samples before and after recovery. Recovery
time is the fitting passes alone (fidelity measurement not included).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))

from onnxprune import Pruner  # noqa: E402
from onnxprune.calibration import CalibrationSet  # noqa: E402

METHODS = ["bn", "lstsq", "bias", "bias,lstsq,bn"]


def digits_table(ratios, criterion: str) -> None:
    from support import digits  # the loader the tests use
    x, y = digits.heldout()
    print(f"digits CNN, held-out accuracy ({len(y)} samples); unpruned "
          f"{digits.accuracy(Pruner.from_model(digits.model()).to_model()):.4f}; criterion {criterion}")
    print(f"{'ratio':>6} {'MACs':>6} {'recovery':<14} {'accuracy':>8} {'cosine before->after':>22} "
          f"{'top-1 agr.':>12} {'time s':>7}")
    for ratio in ratios:
        for methods in ["none"] + METHODS:
            p = Pruner.from_model(digits.model())
            data = CalibrationSet.from_arrays(digits.calib(), p.original_graph.inputs)
            macs = p.macs()
            p.prune(ratio=ratio, criterion=criterion, data=data, round_to=1)  # exact widths, as recorded
            row = f"{ratio:>6} {p.macs() / macs:>6.3f} {methods:<14}"
            if methods == "none":
                print(row + f" {digits.accuracy(p.to_model()):>8.4f}", flush=True)
                continue
            r = p.recover(data, methods=methods)
            fb, fa = r.fidelity_before, r.fidelity_after
            print(row + f" {digits.accuracy(p.to_model()):>8.4f} {fb.cosine:>10.4f} -> {fa.cosine:<8.4f}"
                  f" {fb.top1:>5.2f}->{fa.top1:<5.2f} {r.seconds:>7.2f}" + ("" if r.kept else "  (undone)"),
                  flush=True)


def model_table(paths, ratio: float, samples: int) -> None:
    print(f"\nrandom-input calibration ({samples} samples, 20% held out), --ratio {ratio}")
    for path in paths:
        for methods in METHODS[1:]:
            p = Pruner.load(path)
            data = p.random_inputs(samples)
            macs = p.macs()
            p.prune(ratio=ratio, round_to=1)
            start = time.perf_counter()
            r = p.recover(data, methods=methods)
            fb, fa = r.fidelity_before, r.fidelity_after
            print(f"{Path(path).name:<24} MACs x{p.macs() / macs:.3f} {methods:<14} cosine {fb.cosine:.4f} -> "
                  f"{fa.cosine:.4f}, rel L2 {fb.outputs[0].rel_l2:.4f} -> {fa.outputs[0].rel_l2:.4f}, "
                  f"top-1 agr. {fb.top1:.2f} -> {fa.top1:.2f}; fit {r.seconds:.1f}s "
                  f"(total {time.perf_counter() - start:.1f}s)" + ("" if r.kept else "  (undone: worse)"),
                  flush=True)


VARIANTS = {"per-level": dict(passes=0, refit_shifted=False), "per-level+shifted": dict(passes=0),
            "passes=1": dict(passes=1), "passes=2": dict(passes=2), "passes=3": dict(passes=3),
            "passes=2-unshifted": dict(passes=2, refit_shifted=False), "unweighted": dict(weighting="none")}


def variants_table(names, targets, variants) -> None:
    """Recovery variants side by side on labelled model sets, each on the same pruned model."""
    import copy
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_accuracy import EXACT, ModelSet  # noqa: E402
    from onnxprune.options import PruneOptions  # noqa: E402
    print(f"\n{'set':<12} {'target':>6} {'MACs':>6} {'variant':<20} {'accuracy':>8} {'cosine':>7} {'rel L2':>7} "
          f"{'fit s':>7}")
    for mset in ModelSet.find(names):
        x, y = mset.arrays("heldout")
        base = Pruner.load(mset.model_path, input_shapes=mset.input_shapes)
        calib = base.load_calibration(mset.folder / "calib.npz")
        heldout = base.load_calibration(mset.folder / "heldout.npz").take(64)
        macs0 = base.macs()
        for target in targets:
            pruned = copy.deepcopy(base)
            pruned.prune(PruneOptions(target_macs=target, **EXACT), data=calib)
            for name in variants:
                p = copy.deepcopy(pruned)
                if name != "none":
                    r = p.recover(calib, **VARIANTS[name])
                fid = p.fidelity(heldout)
                acc = mset.accuracy(p.to_model().SerializeToString(), x, y)
                fit = "-" if name == "none" else f"{r.seconds:.2f}" + ("" if r.kept else " undone")
                print(f"{mset.name:<12} {target:>6} {p.macs() / macs0:>6.3f} {name:<20} {acc:>8.4f} "
                      f"{fid.cosine:>7.4f} {fid.outputs[0].rel_l2:>7.4f} {fit:>7}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratios", default="0.3,0.45", help="digits: --ratio values (0.3 ~ MACs x0.5)")
    parser.add_argument("--criterion", default="l2")
    parser.add_argument("--models", nargs="*", default=[], help="other models, random-input calibration")
    parser.add_argument("--ratio", type=float, default=0.3, help="ratio for --models")
    parser.add_argument("--samples", type=int, default=32, help="random calibration samples for --models")
    parser.add_argument("--sets", nargs="*", default=[], help="labelled model sets (digits, orientation, ...)")
    parser.add_argument("--targets", nargs="*", type=float, default=[0.5, 0.3], help="MACs targets for --sets")
    parser.add_argument("--variants", nargs="*", default=["none", "per-level", "passes=2"],
                        help=f"recovery variants for --sets: none, {', '.join(VARIANTS)}")
    args = parser.parse_args()
    np.set_printoptions(precision=4)
    if args.ratios:
        digits_table([float(r) for r in args.ratios.split(",")], args.criterion)
    if args.models:
        model_table(args.models, args.ratio, args.samples)
    if args.sets:
        variants_table(args.sets, args.targets, args.variants)


if __name__ == "__main__":
    main()
