"""Command line: ``onnxprune [prune] IN OUT --ratio R`` and ``onnxprune analyze IN``.

A thin layer over :mod:`onnxprune.api`; every expected failure is one line on
stderr and a non-zero exit, and nothing is written unless everything passed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import onnx_in, onnx_out
from .api import Pruner, PruneOptions, ensure_distinct, ensure_writable, timed
from .errors import OnnxPruneError, PlanError
from .importance import CRITERIA
from .report import Report, describe_groups, format_analysis, format_summary, record_plan
from .validate import PROVIDERS, check

COMMANDS = ("prune", "analyze")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="ONNX model to read")
    parser.add_argument("--input-shape", action="append", metavar="NAME:1x3x224x224",
                        help="fix an input's shape for analysis (repeatable)")
    parser.add_argument("--report", metavar="FILE.json", help="write the full report as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every blocked group")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnxprune", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prune = sub.add_parser("prune", help="prune channels and write a smaller model (default command)")
    _common(prune)
    prune.add_argument("output", help="where to write the pruned model (never the input)")
    prune.add_argument("--ratio", type=float, default=0.5, help="fraction of each group's channels to remove")
    prune.add_argument("--criterion", choices=sorted(CRITERIA), default="l2",
                       help="channel importance (activation, output: need --calib)")
    prune.add_argument("--calib", metavar="FILE.npz|DIR",
                       help="calibration samples (one array per model input, samples on axis 0)")
    prune.add_argument("--round-to", type=int, default=1, metavar="N", help="keep channel counts multiples of N")
    prune.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                       help="regex on node names whose output channels stay (repeatable)")
    prune.add_argument("--global", dest="global_rank", action="store_true",
                       help="rank channels across groups (normalized scores): --ratio of all channels goes")
    prune.add_argument("--max-ratio", type=float, default=1.0, metavar="R",
                       help="no group loses more than this fraction of its channels")
    prune.add_argument("--ratio-for", action="append", default=[], metavar="REGEX=R",
                       help="groups of matching nodes lose R instead (repeatable; the last match wins)")
    prune.add_argument("--target-macs", type=float, metavar="F", help="search the ratio that leaves F of the MACs")
    prune.add_argument("--target-params", type=float, metavar="F", help="... that leaves F of the parameters")
    prune.add_argument("--target-latency", type=float, metavar="F",
                       help="... that leaves F of the latency (timed on --provider, --runs runs per candidate)")
    prune.add_argument("--steps", type=int, default=1, metavar="K", help="prune in K rounds, re-scoring between")
    prune.add_argument("--seed", type=int, default=0, help="seed for random inputs and the random criterion")
    prune.add_argument("--no-validate", action="store_true", help="skip the onnxruntime comparison")
    prune.add_argument("--inputs", metavar="FILE.npz", help="validation inputs (one array per model input)")
    prune.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu", help="onnxruntime provider")
    prune.add_argument("--runs", type=int, default=20, help="timed runs per model for latency")
    prune.add_argument("--save-plan", metavar="FILE.json", help="also write the pruning plan as JSON")
    analyze = sub.add_parser("analyze", help="show groups, what blocks them, params and MACs")
    _common(analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_with_command(list(sys.argv[1:] if argv is None else argv)))
    progress = None if args.quiet else (lambda msg: print(f"[onnxprune] {msg}", file=sys.stderr))
    try:
        report = run_analyze(args, progress) if args.command == "analyze" else run_prune(args, progress)
        if args.report:
            _write_text(args.report, report.to_json())
    except (OnnxPruneError, OSError) as exc:  # OSError: an unwritable output folder, a full disk...
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("onnxprune: interrupted, nothing written", file=sys.stderr)
        return 130
    return 0


def _with_command(argv: list[str]) -> list[str]:
    """Put the command first, as argparse needs: ``-q IN OUT`` means ``prune -q IN OUT``."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first in COMMANDS:
        argv.remove(first)
        return [first] + argv
    return argv if first is None else ["prune"] + argv


def _check_destinations(args) -> None:
    """Every file the run will write: not the input, not a folder, in a folder we can write to."""
    for option in ("output", "report", "save_plan"):
        path = getattr(args, option, None)
        if path:
            what = "output" if option == "output" else "--" + option.replace("_", "-")
            ensure_distinct(args.input, path, what)
            ensure_writable(path, what)


def _write_text(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def _load(args, report, progress) -> Pruner:
    shapes = onnx_in.parse_input_shapes(args.input_shape)
    with timed(progress, "load") as t:
        model = onnx_in.read_model(args.input)
        onnx_in.check_supported(model, args.input)
        onnx_in.check_input_shapes(model, shapes)
    report.timings_s["load"] = t.seconds
    with timed(progress, "dependency graph") as t:
        pruner = Pruner.from_model(model, shapes, checked=True)
    report.timings_s["analyze"] = t.seconds
    describe_groups(pruner.depgraph, report)
    report.params_before, report.macs_before = pruner.params(), pruner.macs()
    return pruner


def run_analyze(args, progress) -> Report:
    _check_destinations(args)
    report = Report(input=args.input)
    _load(args, report, progress)
    print(format_analysis(report, verbose=args.verbose))
    return report


def run_prune(args, progress) -> Report:
    _check_destinations(args)
    options = PruneOptions(ratio=args.ratio, criterion=args.criterion, round_to=args.round_to,
                           ignore=tuple(args.ignore), seed=args.seed, global_rank=args.global_rank,
                           max_ratio=args.max_ratio, ratio_for=tuple(args.ratio_for), target_macs=args.target_macs,
                           target_params=args.target_params, target_latency=args.target_latency,
                           steps=args.steps, latency_runs=args.runs).check()
    if CRITERIA[options.criterion].data_driven and not args.calib:
        raise PlanError(f"--criterion {options.criterion} scores channels on data: give --calib FILE.npz")
    report = Report(input=args.input, output=None, options=options.to_dict())
    pruner = _load(args, report, progress)
    data = pruner.load_calibration(args.calib) if args.calib else None
    original = pruner.depgraph
    with timed(progress, "plan and rewrite") as t:
        plan = pruner.prune(options, data=data, provider=args.provider)
    report.timings_s["plan"] = t.seconds
    record_plan(plan, report, original, pruner.plans)
    report.budget = [s.to_dict() for s in pruner.searches]
    if plan is None and args.save_plan:
        raise PlanError("--save-plan: the rounds of --steps could not be composed into one plan on the original "
                        "graph (a group changed between rounds); run without --save-plan")
    with timed(progress, "check") as t:
        model = pruner.to_model()
        check(model)
    report.timings_s["rewrite"] = t.seconds
    report.valid["checker"] = True
    report.params_after, report.macs_after = pruner.params(), pruner.macs()
    if not args.no_validate:
        with timed(progress, "validate") as t:
            result = pruner.validate(args.inputs, args.provider, args.runs)
        report.timings_s["validate"] = t.seconds
        report.valid.update(onnxruntime=result.onnxruntime, output_shapes_unchanged=result.shapes_match)
        report.latency_ms_before, report.latency_ms_after = result.latency_ms_before, result.latency_ms_after
        report.provider = args.provider
    onnx_out.save(model, args.output)
    report.output = args.output
    if args.save_plan:
        _write_text(args.save_plan, plan.to_json())
    print(format_summary(report))
    return report
