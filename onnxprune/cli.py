"""Command line: onnxprune [prune] IN OUT --ratio R, onnxprune analyze IN, onnxprune sensitivity IN,
onnxprune fuse IN OUT, onnxprune apply PLAN.json IN OUT.

A thin layer over :mod:`onnxprune.api`. The contract (also in the README):
every failure is one line on stderr (``onnxprune: error: ...``) and an exit
code per class (:mod:`onnxprune.errors`); every path is checked before any
work (:mod:`onnxprune.files`); outputs are written together and atomically,
only when everything passed; SIGINT/SIGTERM leave nothing behind.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import files, onnx_in, onnx_out
from .api import Pruner, PruneOptions, RecoveryOptions
from .calibration import CalibrationSet, has_batch_axis
from .errors import (EXIT_FIDELITY, EXIT_INTERNAL, EXIT_SIGINT, EXIT_SIGTERM, FidelityError, InputError, Interrupted,
                     NothingToPrune, OnnxPruneError, OptionError, PlanError, RuleError, UsageError, ValidationError)
from .files import PathPlan, atomic_outputs
from .plan import Plan
from .importance import CRITERIA
from .options import (FUSIONS, MIN_COSINE, RECOVERY_METHODS, TARGET_METRICS, BudgetMode, FuseOptions,
                      LatencyOptions, RowWeighting, SaveOptions, default_budget, default_criterion, parse_shapes)
from .progress import Progress
from .recovery import recovery_report
from .depth import DEPTH_SCORES, DepthScore
from .passes.fusion import fusion_report
from .attribution import attribute, replay_stages
from .recipe import CHANNELS, Recipe
from .report import (Report, describe_blocks, describe_groups, fidelity_warning, format_analysis, format_fused,
                     format_groups, format_summary, record_plan, top_barriers)
from .resources import available_memory, check_memory, parse_size
from .rules import Analysis
from .sensitivity import ERRORS, Sensitivity, check_plot, plot_format
from .validate import PROVIDERS, STAND_IN_SEARCH, check, check_provider, read_inputs_file, runnable_stand_ins, session
from .widthgrid import MODE_ENV, GridMode

COMMANDS = ("prune", "analyze", "sensitivity", "fuse", "apply")
DEBUG_ENV = "ONNXPRUNE_DEBUG"  # set it to get the traceback of an internal error


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line with a hint, not a usage block; help shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _DefaultsFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" where a default says something: not for flags, None or empty lists."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "default" in text or not action.option_strings or action.nargs == 0
                or default in (None, argparse.SUPPRESS) or default == []):
            return text
        return f"{text} (default: %(default)s)"


DESCRIPTION = ("Structural channel pruning for ONNX models. Commands: prune (the default: onnxprune IN OUT "
               "--ratio 0.5), analyze IN, sensitivity IN, fuse IN OUT, apply PLAN.json IN OUT. 'onnxprune COMMAND --help' "
               "lists a command's options.")


def _common(parser: argparse.ArgumentParser, pruning: bool = True) -> None:
    parser.add_argument("input", help="ONNX model to read")
    parser.add_argument("--input-shape", "--shapes", action="append", metavar="NAME:DIMS",
                        help="fix input shapes for analysis: NAME:1x3x224x224, several separated by commas "
                             "(trtexec's --shapes form), NAME: for a scalar; repeatable")
    parser.add_argument("--report", metavar="FILE.json", help="write the full report as JSON")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout (no summary)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="list every group and barrier" if pruning else "list every refused fusion")
    parser.add_argument("--mkdir", action="store_true",
                        help="create the folders of outputs that do not exist (without it they are refused)")
    if pruning:
        parser.add_argument("--prune-head-dim", action="store_true",
                            help="attention prunes head_dim (the same dims of every head) instead of whole heads")


def _save_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--external-data", action="store_true",
                        help="write the weights to OUTPUT.data next to the model (default: when the input has "
                             "external data or the output passes 2 GB)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__  # late: the package imports the engine first
    parser = _Parser(prog="onnxprune", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    prune = sub.add_parser("prune", help="prune channels and write a smaller model (default command)")
    _common(prune)
    prune.add_argument("output", help="where to write the pruned model (never the input)")
    _save_args(prune)
    prune.add_argument("--ratio", type=float, help="fraction of each group's channels to remove "
                       "(default 0.5; 0 with --depth)")
    prune.add_argument("--depth", type=int, default=0, metavar="N",
                       help="first remove the N least important residual blocks ('analyze' lists them)")
    prune.add_argument("--depth-score", choices=DEPTH_SCORES, metavar="{" + ",".join(DEPTH_SCORES) + "}",
                       help="block importance for --depth (default: output with --calib, else weights)")
    prune.add_argument("--remove-activations", type=float, default=0.0, metavar="N",
                       help="last, replace the N activations between two linear layers (a fraction of them if "
                            "< 1) whose removal changes the outputs least on --calib by the identity, and merge "
                            "those layers (UPDP; fuses; --ratio 0 unless given)")
    prune.add_argument("--criterion", choices=sorted(CRITERIA),
                       help="channel importance (" + ", ".join(n for n, c in CRITERIA.items() if c.data_driven)
                       + ": need --calib; default: l2, with --calib output, with --calib and --recover "
                         "reconstruction)")
    prune.add_argument("--calib", metavar="FILE.npz|DIR",
                       help="calibration samples (one array per model input, samples on axis 0)")
    prune.add_argument("--recover", action="store_true",
                       help="after pruning, re-fit the model to the original on --calib data (no training)")
    prune.add_argument("--recover-methods", default=",".join(RECOVERY_METHODS), metavar="M[,M]",
                       help=f"recovery methods ({', '.join(RECOVERY_METHODS)}; default: all)")
    prune.add_argument("--recover-weighting", choices=[w.value for w in RowWeighting], default=RowWeighting.AUTO.value,
                       help="least squares' row weights: auto (default) weighs padding (an attention-mask input) and "
                            "the class most positions of a sequence output pick (CTC's blank) at "
                            f"{RecoveryOptions.background_weight:g}, so the fit spends itself on the positions the "
                            "answer is read from; none: every output position counts the same (models whose every "
                            "position matters, or to compare)")
    prune.add_argument("--recover-passes", type=int, default=RecoveryOptions.passes, metavar="P",
                       help="passes over --calib for the front-to-back fits: 0 (default) one per level of layers, "
                            "each fitted on the pruned model's own inputs (most faithful); P > 0: every layer at once "
                            "from the original's inputs, then the last P-1 levels one by one (faster on deep models, "
                            "less faithful where fits compound)")
    prune.add_argument("--round-to", type=int, default=None, metavar="N",
                       help="keep channel counts multiples of N (default: the provider's width grid; 1: exact)")
    prune.add_argument("--width-grid", choices=[m.value for m in GridMode], default=None,
                       help="where the fast widths come from: measured once per machine and cached (default), or "
                            f"the built-in default (also ${MODE_ENV}=default)")
    prune.add_argument("--allow-slower", action="store_true",
                       help="with --target-macs/params: return the plan found without timing it against the original")
    prune.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                       help="regex on node names whose output channels stay (repeatable)")
    prune.add_argument("--seed", type=int, default=0, help="seed for random inputs and the random criterion")
    prune.add_argument("--global", dest="global_rank", action="store_true",
                       help="rank channels across groups (normalized scores): --ratio of all channels goes "
                            "(--budget global)")
    prune.add_argument("--budget", choices=[m.value for m in BudgetMode], default=None,
                       help="how the ratio or target is shared out: the same fraction of every group, by normalized "
                            "score across groups (--global), or where the output error measured on --calib data per "
                            "saved MAC is lowest (default: sensitivity with --calib and a --target-* without --recover, "
                            "else uniform)")
    prune.add_argument("--max-ratio", type=float, default=1.0, metavar="R",
                       help="no group loses more than this fraction of its channels")
    prune.add_argument("--ratio-for", action="append", default=[], metavar="REGEX=R",
                       help="groups of matching nodes lose R instead (repeatable; the last match wins)")
    prune.add_argument("--target-macs", type=float, metavar="F", help="search the ratio that leaves F of the MACs")
    prune.add_argument("--target-params", type=float, metavar="F", help="... that leaves F of the parameters")
    prune.add_argument("--target-latency", type=float, metavar="F",
                       help="... that leaves F of the latency (each candidate timed side by side with the "
                            "original on --provider, as for the summary: --threads, --runs, --latency-time)")
    prune.add_argument("--no-depth-search", dest="depth_search", action="store_false",
                       help="--target-latency thins layers only (by default it also searches how many residual "
                            "blocks to remove, as --depth would)")
    prune.add_argument("--ratio-from", metavar="SENS.json:MAXERR",
                       help="--ratio-for options from a sensitivity report, for an error budget per unit")
    prune.add_argument("--steps", type=int, default=1, metavar="K", help="prune in K rounds, re-scoring between")
    prune.add_argument("--head-ratio", type=float, metavar="R", help="ratio for attention-head groups (default --ratio)")
    prune.add_argument("--prune-hidden", action="store_true",
                       help="also prune the hidden size (groups through norm statistics: inexact)")
    prune.add_argument("--no-prune-heads", dest="prune_heads", action="store_false", help="keep attention heads")
    prune.add_argument("--no-prune-channels", dest="prune_channels", action="store_false",
                       help="keep other channel groups (MLP width, conv channels)")
    _validation(prune)
    prune.add_argument("--save-plan", metavar="FILE.json",
                       help="also write the plan (every edit, in order: removed blocks, channels, fusion) as JSON")
    prune.add_argument("--fuse", action="store_true",
                       help="after pruning and recovery, fuse exactly (as 'onnxprune fuse': BatchNorm and "
                            "per-channel constants into layers, parallel and consecutive layers into one)")
    analyze = sub.add_parser("analyze", help="show the prunable groups and blocks, what blocks the others, "
                                             "params and MACs")
    _common(analyze)
    _sensitivity_parser(sub)
    _fuse_parser(sub)
    apply = sub.add_parser("apply", help="apply a plan saved with --save-plan to the model it was made on")
    apply.add_argument("plan", metavar="PLAN.json", help="a plan written by 'onnxprune ... --save-plan'")
    _common(apply)
    apply.add_argument("output", help="where to write the pruned model (never the input)")
    _save_args(apply)
    apply.add_argument("--seed", type=int, default=0, help="seed for random validation inputs")
    _validation(apply)
    return parser


def _validation(parser: argparse.ArgumentParser) -> None:
    """How prune and apply check the model they write."""
    parser.add_argument("--no-validate", action="store_true", help="skip the onnxruntime comparison")
    parser.add_argument("--inputs", metavar="FILE.npz", help="validation inputs (one array per model input)")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu", help="onnxruntime provider")
    _latency_args(parser)
    parser.add_argument("--memory-limit", default="auto", metavar="SIZE",
                        help="refuse to validate when tensors would need more (e.g. 8G; 'none'; "
                             "default: the memory available now)")
    parser.add_argument("--min-cosine", type=float, default=MIN_COSINE, metavar="C",
                        help="warn (in the summary and the report) when the pruned model's output cosine against "
                             "the original falls below C")
    parser.add_argument("--strict", action="store_true",
                        help=f"a cosine below --min-cosine is an error (exit {EXIT_FIDELITY}, nothing written)")


def _latency_args(parser) -> None:
    """How the summary's latency is timed (prune and fuse; see LatencyOptions)."""
    defaults = LatencyOptions()
    parser.add_argument("--threads", type=int, default=defaults.threads, metavar="N",
                        help=f"onnxruntime threads of the timed sessions (default {defaults.threads})")
    parser.add_argument("--runs", type=int, default=defaults.min_runs, metavar="N",
                        help=f"latency: at least N interleaved runs of each model (0: no latency; default "
                             f"{defaults.min_runs}); more until the ratio's 95%% CI is within --latency-spread")
    parser.add_argument("--max-runs", type=int, metavar="N",
                        help=f"latency: at most N runs (default {defaults.max_runs}, or --runs if more)")
    parser.add_argument("--latency-time", type=float, default=defaults.max_seconds, metavar="S",
                        help=f"latency: stop after S seconds however wide the spread (default {defaults.max_seconds:g})")
    parser.add_argument("--latency-spread", type=float, default=defaults.spread, metavar="F",
                        help=f"latency: stop when the ratio's 95%% CI half-width is within F of it "
                             f"(default {defaults.spread:g})")


def _fuse_parser(sub) -> None:
    fuse = sub.add_parser("fuse", help="fold BatchNorm and per-channel constants into layers, merge parallel and "
                                       "consecutive linear layers, drop Identity/Dropout: exact, no data")
    _common(fuse, pruning=False)
    fuse.add_argument("output", help="where to write the fused model (never the input)")
    _save_args(fuse)
    fuse.add_argument("--kinds", default=",".join(FUSIONS), metavar="K[,K]",
                      help=f"which fusions ({', '.join(FUSIONS)}; default: all)")
    fuse.add_argument("--no-validate", action="store_true", help="skip the onnxruntime comparison")
    fuse.add_argument("--inputs", metavar="FILE.npz", help="validation inputs (one array per model input)")
    fuse.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu", help="onnxruntime provider")
    _latency_args(fuse)
    fuse.add_argument("--seed", type=int, default=0, help="seed for random validation inputs")


def _sensitivity_parser(sub) -> None:
    sens = sub.add_parser("sensitivity", help="prune each group alone at a few ratios; report the output error")
    _common(sens)
    sens.add_argument("--calib", metavar="FILE.npz|DIR", help="samples to measure on (default: random inputs)")
    sens.add_argument("--samples", type=int, default=32, metavar="N",
                      help="use at most N samples of --calib (random inputs: 8)")
    sens.add_argument("--ratios", default="0.25,0.5,0.75", metavar="R1,R2,...", help="ratios to try per unit")
    sens.add_argument("--criterion", choices=sorted(CRITERIA),
                      help="which channels go first (default: l2, with --calib output)")
    sens.add_argument("--round-to", type=int, default=None, metavar="N",
                      help="keep channel counts multiples of N (default: the default width grid; 1: exact)")
    sens.add_argument("--blocks", type=int, default=0, metavar="N",
                      help="measure blocks of groups whose root names share their first N '/' parts (0: groups)")
    sens.add_argument("--error", choices=ERRORS, default="cosine",
                      help="error for --suggest: 1-cosine, relative L2, or 1-top-1 agreement")
    sens.add_argument("--suggest", type=float, metavar="MAXERR",
                      help="print --ratio-for options keeping each unit's error within MAXERR")
    sens.add_argument("--plot", metavar="FILE.png",
                      help="plot error against ratio per unit, in the format the extension names (.png, .svg, "
                           ".pdf, .jpg...; needs matplotlib)")
    sens.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu", help="onnxruntime provider")
    sens.add_argument("--seed", type=int, default=0, help="seed for random inputs and the random criterion")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with _signals_raise(), warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # numpy/onnx warnings never reach the user
        before = files.commits()
        try:
            args = build_parser().parse_args(_with_command(argv))
            progress = Progress(enabled=not args.quiet)
            run = {"analyze": run_analyze, "prune": run_prune, "sensitivity": run_sensitivity,
                   "fuse": run_fuse, "apply": run_apply}[args.command]
            report = run(args, progress)
            if args.json:
                print(report.to_json())
            progress.flush()
            return 0
        except NothingToPrune as exc:
            return _fail(f"onnxprune: nothing to prune: {exc}", exc.exit_code)
        except OnnxPruneError as exc:
            return _fail(f"onnxprune: error: {exc}", exc.exit_code)
        except KeyboardInterrupt:
            return _fail(f"onnxprune: error: interrupted (SIGINT); {_written(before)}", EXIT_SIGINT)
        except Interrupted:
            return _fail(f"onnxprune: error: interrupted (SIGTERM); {_written(before)}", EXIT_SIGTERM)
        except UnicodeDecodeError:  # only input carries strings: a damaged model or data file
            return _fail("onnxprune: error: the input holds text that is not valid UTF-8 (a damaged file?)", 1)
        except MemoryError:
            return _fail("onnxprune: error: out of memory (try --no-validate or a smaller --input-shape)", 1)
        except OSError as exc:  # an unwritable folder, a full disk...
            where = f"{exc.filename}: " if exc.filename else ""
            return _fail(f"onnxprune: error: {where}{exc.strerror or exc}", 1)
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            first = (str(exc).strip().splitlines() or [""])[0]
            return _fail(f"onnxprune: error: internal error: {type(exc).__name__}: {first} "
                         f"(a bug in onnxprune; {DEBUG_ENV}=1 shows the traceback)", EXIT_INTERNAL)


def _written(commits_before: int) -> str:
    """A signal that arrives during the final renames is handled after them: say if outputs are complete."""
    return "nothing written" if files.commits() == commits_before else "the outputs were already complete"


def _fail(line: str, code: int) -> int:
    sys.stdout.flush()
    print(line, file=sys.stderr)
    return code


@contextmanager
def _signals_raise():
    """SIGTERM raises Interrupted and SIGINT KeyboardInterrupt, so every cleanup runs; restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise Interrupted()

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_term)}
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _with_command(argv: list[str]) -> list[str]:
    """Put the command first, as argparse needs: ``-q IN OUT`` means ``prune -q IN OUT``."""
    if "--version" in argv:
        return ["--version"]
    first = next((a for a in argv if not a.startswith("-")), None)
    if first in COMMANDS:
        argv.remove(first)
        return [first] + argv
    return argv if first is None else ["prune"] + argv


# ----------------------------------------------------------------------------- paths
def paths(args) -> PathPlan:
    """Every path the command reads and writes (add new ones here; see onnxprune.files)."""
    plan = PathPlan(make_folders=args.mkdir).read("input", args.input)
    plan.read("plan", getattr(args, "plan", None))
    plan.read("--inputs", getattr(args, "inputs", None))
    plan.read("--calib", getattr(args, "calib", None), folder=None)  # a file or a folder
    output = getattr(args, "output", None)
    plan.write("output", output)
    if output:
        plan.write("output's external data", onnx_out.external_data_path(output))
    plan.write("--report", args.report)
    plan.write("--save-plan", getattr(args, "save_plan", None))
    plan.write("--plot", getattr(args, "plot", None))
    plan.read("--ratio-from", _ratio_from_path(getattr(args, "ratio_from", None)))
    return plan


def _read(args, plan: PathPlan, report: Report, progress: Progress):
    """Parse the model, add its external-data files to the path plan, check, load, check support."""
    shapes = parse_shapes(args.input_shape)
    with progress.stage("load") as stage:
        model_file = onnx_in.open_model(args.input)
        for file in model_file.external_files:
            plan.read("input's external data", file)
        plan.check()
        model = model_file.load(map_weights=True)
        report.conversions += onnx_in.check_supported(model, args.input)
        onnx_in.check_input_shapes(model, shapes)
        onnx_in.check_no_empty_inputs(model, shapes)
    report.timings_s["load"] = stage.seconds
    return model_file, shapes


def _analyse(args, model_file: onnx_in.ModelFile, shapes, report: Report, progress: Progress) -> Pruner:
    pruner = _load(args, model_file, shapes, report, progress)
    report.conversions += [note for note in pruner.notes if note not in report.conversions]
    dg = pruner.depgraph
    if not dg.groups and not dg.barriers and not pruner.prunable_inside_subgraphs():
        ops = sorted({n.op_type for n in pruner.graph.nodes})
        what = f"its operators ({', '.join(ops)}) own no channels" if ops else "it has no operator nodes"
        raise NothingToPrune(f"{args.input}: {what}")
    describe_groups(dg, report)
    report.params_before, report.macs_before = pruner.params(), pruner.macs()
    return pruner


def _load(args, model_file: onnx_in.ModelFile, shapes, report: Report, progress: Progress) -> Pruner:
    with progress.stage("dependency graph") as stage:
        try:
            pruner = Pruner.from_file(model_file, shapes,
                                      analysis=Analysis(head_dim=getattr(args, "prune_head_dim", False)))
        except RuleError:
            _blame_the_input_if_it_does_not_load(model_file.path, getattr(args, "provider", "cpu"))
            raise
    report.timings_s["analyze"] = stage.seconds
    return pruner


def _at_runnable_stand_ins(args, model_file, shapes, report: Report, progress: Progress, pruner: Pruner,
                           failure: InputError):
    """The original failed at the stand-in sizes of its dynamic dims: analyse again at the first larger
    size that runs (said in the report), or ask for the real sizes in one line."""
    found, dims = runnable_stand_ins(pruner._original_model(), model_file.proto, shapes, args.provider, args.seed)
    if found is None:
        if not dims:
            raise failure
        example = next(v for v in onnx_in.model_inputs(model_file.proto) if v.name not in (shapes or {})
                       and any(not isinstance(d, int) for d in (v.shape or ())[1:]))
        spelled = "x".join(str(d) if isinstance(d, int) else ("1" if i == 0 else f"<{d}>")
                           for i, d in enumerate(example.shape))
        raise InputError(f"{failure} (its dynamic dims {', '.join(dims)} were tried at 8..{STAND_IN_SEARCH[-1]}); "
                         f"give their real sizes with --input-shape {example.name}:{spelled}") from None
    size = next(d for v in onnx_in.model_inputs(model_file.proto) if v.name in found
                for d, declared in zip(found[v.name], v.shape or ()) if not isinstance(declared, int) and d > 1)
    reason = str(failure).split("Status Message: ")[-1].split("onnxruntime cannot run the input model: ")[-1]
    report.conversions.append(f"dynamic dims {', '.join(dims)} analysed and validated at {size}: the model does "
                              f"not run at the stand-in 8 ({reason}); give real sizes with --input-shape")
    return _analyse(args, model_file, found, report, progress), found


def _nothing_prunable(args, pruner: Pruner, report: Report) -> NothingToPrune:
    """Every group is blocked or fixed: the line names the top reasons (analyze lists them all)."""
    reasons = top_barriers(report)
    why = f": {reasons}" if reasons else ""
    return NothingToPrune(f"{args.input}: none of its {len(pruner.groups)} channel groups can be pruned{why} "
                          f"('onnxprune analyze {args.input}' ranks every reason)")


def _blame_the_input_if_it_does_not_load(model, provider: str) -> None:
    """A rule failed: if onnxruntime cannot even load the model, that (bad input) is the real cause."""
    try:
        session(model, provider)
    except OnnxPruneError:
        return
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"onnxruntime cannot load the input model: {first}") from None


def _blame_the_input_if_it_fails_the_checker(pruner: Pruner) -> None:
    """The pruned model fails the full checker: if the input fails it too (declared shapes that contradict
    its own weights...), that is bad input, not a pruning bug."""
    if pruner.original is None:
        return
    try:
        check(pruner.original)
    except ValidationError as exc:
        raise InputError(str(exc).replace("pruned model fails", "the input model fails", 1)) from None


def run_analyze(args, progress: Progress) -> Report:
    plan = paths(args).check()
    report = Report(input=args.input)
    model_file, shapes = _read(args, plan, report, progress)
    pruner = _analyse(args, model_file, shapes, report, progress)
    describe_blocks(pruner, report)
    with atomic_outputs() as out:
        if args.report:
            out.stage(args.report, lambda staged: staged.write_text(report.to_json()))
    if not args.json:
        print(format_analysis(report, verbose=args.verbose))
        tables = format_groups(report, verbose=args.verbose)
        if tables:
            print(tables)
    return report


def _recovery_options(args) -> RecoveryOptions | None:
    """Checked before any work: --recover needs --calib."""
    if not args.recover:
        return None
    if not args.calib:
        raise OptionError("--recover re-fits the pruned model on calibration data: give --calib FILE.npz")
    return RecoveryOptions(methods=args.recover_methods, seed=args.seed, provider=args.provider,
                           weighting=args.recover_weighting, passes=args.recover_passes).check()


def _latency_options(args) -> LatencyOptions:
    """How the summary's latency and --target-latency are timed (onnxprune.latency)."""
    max_runs = args.max_runs if args.max_runs is not None else max(LatencyOptions.max_runs, args.runs)
    return LatencyOptions(threads=args.threads, min_runs=args.runs, max_runs=max_runs,
                          max_seconds=args.latency_time, spread=args.latency_spread).check()


def _check_run_options(args) -> tuple[PruneOptions, int | None]:
    ratio = args.ratio if args.ratio is not None else \
        (0.0 if args.depth or args.remove_activations else PruneOptions.ratio)
    criterion = args.criterion or default_criterion(bool(args.calib), args.recover)
    options = PruneOptions(ratio=ratio, depth=args.depth, depth_score=args.depth_score, criterion=criterion,
                           remove_activations=args.remove_activations,
                           round_to=args.round_to,
                           ignore=tuple(args.ignore), seed=args.seed, global_rank=args.global_rank,
                           budget=args.budget or default_budget(bool(args.calib), _has_target(args), args.recover,
                                                                args.global_rank).value,
                           max_ratio=args.max_ratio, target_macs=args.target_macs,
                           ratio_for=tuple(_ratios_from(args.ratio_from)) + tuple(args.ratio_for),
                           target_params=args.target_params, target_latency=args.target_latency,
                           steps=args.steps, latency=_latency_options(args), head_ratio=args.head_ratio,
                           prune_hidden=args.prune_hidden, prune_heads=args.prune_heads,
                           prune_head_dim=args.prune_head_dim,
                           prune_channels=args.prune_channels, width_grid=args.width_grid,
                           depth_search=args.depth_search,
                           never_slower=False if args.allow_slower or args.no_validate or not args.runs
                           else None).check()
    if CRITERIA[options.criterion].data_driven and not args.calib:
        raise OptionError(f"--criterion {options.criterion} scores channels on data: give --calib FILE.npz")
    if options.budget_mode is BudgetMode.SENSITIVITY and not args.calib:
        raise OptionError("--budget sensitivity measures each layer's output error on data: give --calib FILE.npz")
    if options.depth_score and DepthScore(options.depth_score).data_driven and not args.calib:
        raise OptionError(f"--depth-score {options.depth_score} scores blocks on data: give --calib FILE.npz")
    if options.remove_activations and not args.calib:
        raise OptionError("--remove-activations chooses activations on data: give --calib FILE.npz")
    return options, _check_validation_options(args)


def _has_target(args) -> bool:
    return any(getattr(args, f"target_{m}") is not None for m in TARGET_METRICS)


def _check_validation_options(args) -> int | None:
    """The options of _validation, checked before any work; returns the memory limit."""
    if args.runs < 0:
        raise OptionError(f"--runs must be >= 0, got {args.runs}")
    if not -1.0 <= args.min_cosine <= 1.0:
        raise OptionError(f"--min-cosine must be in [-1, 1], got {args.min_cosine}")
    if args.strict and args.no_validate:
        raise OptionError("--strict checks the pruned model's fidelity, which --no-validate skips: drop one")
    limit = available_memory() if args.memory_limit == "auto" else parse_size(args.memory_limit)
    if not args.no_validate:
        check_provider(args.provider)
    return limit


def run_prune(args, progress: Progress) -> Report:
    options, memory_limit = _check_run_options(args)
    recovery = _recovery_options(args)
    paths_plan = paths(args).check()
    report = Report(input=args.input, output=None, options=options.to_dict())
    if recovery is not None:
        report.options["recovery"] = recovery.to_dict()
    model_file, shapes = _read(args, paths_plan, report, progress)
    inputs = onnx_in.model_inputs(model_file.proto)
    feeds = read_inputs_file(args.inputs, inputs) if args.inputs else None
    data = CalibrationSet.load(args.calib, inputs) if args.calib else None
    if data is not None and data.unused_warning():
        report.warnings.append(data.unused_warning())
    pruner = _analyse(args, model_file, shapes, report, progress)
    reference = None
    if not args.no_validate:  # the original runs first: its own failures are never blamed on the pruning
        check_memory(pruner.original_graph, memory_limit)
        with progress.stage("run original") as stage:
            given = feeds is not None
            feeds = pruner.feeds(seed=args.seed) if feeds is None else feeds
            threads = args.threads if args.runs else None
            try:
                reference = pruner.run_original(feeds, args.provider, threads)
            except InputError as exc:
                if given:
                    raise
                pruner, shapes = _at_runnable_stand_ins(args, model_file, shapes, report, progress, pruner, exc)
                feeds = pruner.feeds(seed=args.seed)
                reference = pruner.run_original(feeds, args.provider, threads)
        report.timings_s["run_original"] = stage.seconds
    discovery = pruner.blocks() if options.depth or options.target_latency is not None else None
    if options.depth and not discovery.blocks:
        raise NothingToPrune(f"{args.input}: --depth: {discovery.why_none()}")
    if not options.depth and not options.remove_activations and not pruner.prunable_groups() \
            and not pruner.prunable_inside_subgraphs():
        raise _nothing_prunable(args, pruner, report)
    recover_round = None
    if recovery is not None:  # after every round of --steps, so the next one scores recovered weights
        bars = progress.enabled and sys.stderr.isatty()

        def recover_round(p: Pruner, step: int) -> None:
            with progress.stage(f"recover (round {step})" if options.steps > 1 else "recover"):
                p.recover(data, recovery, progress=bars)
    scoring = _fit_part(data, args)  # data-driven criteria never see the samples fidelity is reported on
    if options.depth:  # before width: the rounds then score and plan the shallower model
        with progress.stage("remove blocks") as stage:
            live = progress.enabled and sys.stderr.isatty()
            pruner.remove_blocks(options.depth, scoring, options.depth_score, args.provider,
                                 progress=lambda items: tqdm(items, desc="[onnxprune] score blocks", unit="block",
                                                             leave=False, file=sys.stderr, disable=not live))
        report.timings_s["depth"] = stage.seconds
        report.blocks = {"found": len(discovery.blocks), "removed": pruner.removed_blocks}
        options = options.with_(depth=0, depth_search=False)  # the blocks are chosen: width only now
    if options.round_to is None:  # the first run on a machine times the layer kinds (cached after)
        with progress.stage("width grid") as stage:
            pruner.width_grid(args.provider, options.width_grid)
        report.timings_s["width_grid"] = stage.seconds
    original = pruner.depgraph
    with progress.stage("plan and rewrite" + (" and recover" if recovery else "")) as stage:
        live = progress.enabled and sys.stderr.isatty()
        plan = pruner.prune(options.with_(remove_activations=0.0), data=scoring, provider=args.provider,
                            after_step=recover_round,
                            progress=lambda jobs: tqdm(jobs, desc="[onnxprune] budget: sensitivity", unit="prune",
                                                       leave=False, file=sys.stderr, disable=not live))
    report.timings_s["plan"] = stage.seconds
    record_plan(plan, report, original, pruner.plans)
    report.subgraphs = list(pruner.body_notes)
    report.budget = [s.to_dict() for s in pruner.searches]
    if options.remove_activations:  # after width: what it merges no round could prune
        with progress.stage("remove activations") as stage:
            report.activations = pruner.remove_activations(options.remove_activations, scoring, args.provider)
        report.timings_s["activations"] = stage.seconds
        if recover_round is not None:  # the merged layers re-fitted to the tensors they stand for
            recover_round(pruner, options.steps + 1)
    for search in pruner.searches[-1:]:  # with --steps, the last round's target is the one asked for
        if search.depth_width is not None and not search.depth_width.met:
            report.warnings.append(f"--target-latency {search.target:g} not met: the fastest plan found (of "
                                   f"{len(search.depth_width.candidates)} depths with the width) is "
                                   f"{search.depth_width.chosen.latency.text()}")
    if pruner.removed_blocks and report.blocks is None:  # --target-latency chose them with the width
        report.blocks = {"found": len(discovery.blocks), "removed": pruner.removed_blocks}
    if args.fuse:  # last: recovery's BatchNorm re-estimation needs the BatchNorms
        _fuse(pruner, FuseOptions(), report, progress)
    return _check_and_write(args, pruner, report, feeds, reference, data, plan, progress)


def _run_original(args, pruner: Pruner, feeds, memory_limit, report: Report, progress: Progress):
    """(feeds, the original's outputs on them), or (feeds, None) with --no-validate. The original runs
    before any pruning, so its own failures are never blamed on the pruning."""
    if args.no_validate:
        return feeds, None
    check_memory(pruner.original_graph, memory_limit)
    with progress.stage("run original") as stage:
        feeds = pruner.feeds(seed=args.seed) if feeds is None else feeds
        reference = pruner.run_original(feeds, args.provider, args.threads if args.runs else None)
    report.timings_s["run_original"] = stage.seconds
    return feeds, reference


def _check_edited(pruner: Pruner) -> None:
    """The edited model through onnx.checker, its weights by reference (a failure the input shares is
    blamed on the input)."""
    try:
        pruner.check()
    except ValidationError:
        _blame_the_input_if_it_fails_the_checker(pruner)
        raise


def _check_and_write(args, pruner: Pruner, report: Report, feeds, reference, data, plan, progress: Progress):
    """The pruned model through the checker, onnxruntime and the fidelity check; then every output at once."""
    save_plan = getattr(args, "save_plan", None)
    with progress.stage("check") as stage:
        _check_edited(pruner)
    report.timings_s["rewrite"] = stage.seconds
    if pruner.recoveries:
        report.timings_s["recover"] = sum(r.seconds + r.fidelity_seconds for r in pruner.recoveries)
        report.timings_s["plan"] -= report.timings_s["recover"]
        report.recovery = recovery_report(pruner.recoveries)
    report.valid["checker"] = True
    report.params_after, report.macs_after = pruner.params(), pruner.macs()
    if reference is not None:
        with progress.stage("validate") as stage:
            result = pruner.validate(provider=args.provider, runs=args.runs, feeds=feeds, reference=reference,
                                     latency=_latency_options(args))
        report.timings_s["validate"] = stage.seconds
        report.valid.update(onnxruntime=result.onnxruntime, output_shapes_unchanged=result.shapes_match)
        report.provider = args.provider
        if result.latency is not None:
            report.record_latency(result.latency)
        sample = _fidelity_sample(pruner, data, args, feeds)
        with progress.stage("fidelity") as stage:
            report.fidelity = pruner.fidelity(sample, args.provider).to_dict()
        report.timings_s["fidelity"] = stage.seconds
        if result.latency is not None and pruner.recipe.steps:
            with progress.stage("latency per step") as stage:
                report.speed = _attribution(pruner, args, feeds, sample, result.latency)
            report.timings_s["latency_per_step"] = stage.seconds
        warning = fidelity_warning(report.fidelity, args.min_cosine)
        if warning and args.strict:
            raise FidelityError(f"{warning}; nothing written (--strict)")
        if warning:
            report.warnings.append(warning)
    report.output = args.output
    with atomic_outputs() as out:
        pruner.stage(out, args.output, SaveOptions(args.external_data))
        if save_plan:  # every edit, each on the graph of its time: re-applies to the input
            out.stage(save_plan, lambda staged: staged.write_text(pruner.recipe.to_json()))
        if args.report:
            out.stage(args.report, lambda staged: staged.write_text(report.to_json()))
    if not args.json:
        print(format_summary(report, verbose=args.verbose))
    return report


def _fuse(pruner: Pruner, options: FuseOptions, report: Report, progress: Progress) -> None:
    with progress.stage("fuse") as stage:
        report.fusion = fusion_report(pruner.fuse(options))
    report.timings_s["fuse"] = stage.seconds


def run_fuse(args, progress: Progress) -> Report:
    """``onnxprune fuse IN OUT``: exact rewrites only, so the written model must compute what the input
    does: its outputs are compared on the validation inputs, and a difference fails the run."""
    options = FuseOptions(kinds=args.kinds).check()
    latency = _latency_options(args)
    if not args.no_validate:
        check_provider(args.provider)
    paths_plan = paths(args).check()
    report = Report(input=args.input, options={"fuse": list(options.ordered)})
    model_file, shapes = _read(args, paths_plan, report, progress)
    feeds = read_inputs_file(args.inputs, onnx_in.model_inputs(model_file.proto)) if args.inputs else None
    pruner = _load(args, model_file, shapes, report, progress)
    report.params_before, report.macs_before = pruner.params(), pruner.macs()
    reference = None
    if not args.no_validate:
        with progress.stage("run original"):
            feeds = pruner.feeds(seed=args.seed) if feeds is None else feeds
            reference = pruner.run_original(feeds, args.provider, args.threads if args.runs else None)
    _fuse(pruner, options, report, progress)
    _check_edited(pruner)
    report.valid["checker"] = True
    report.params_after, report.macs_after = pruner.params(), pruner.macs()
    if reference is not None:
        with progress.stage("validate") as stage:
            result = pruner.validate(provider=args.provider, runs=args.runs, feeds=feeds, reference=reference,
                                     latency=latency)
            fidelity = pruner.fidelity(CalibrationSet(feeds, "validation inputs"), args.provider)
        report.timings_s["validate"] = stage.seconds
        report.valid.update(onnxruntime=result.onnxruntime, output_shapes_unchanged=result.shapes_match)
        report.provider, report.fidelity = args.provider, fidelity.to_dict()
        if result.latency is not None:
            report.record_latency(result.latency, warn=False)
        worst = max((o.rel_l2 for o in fidelity.outputs), default=0.0)
        if not worst <= FUSED_TOLERANCE:
            raise ValidationError(f"the fused model's outputs differ from the input's (relative error {worst:.3g}): "
                                  "a bug in onnxprune; nothing written")
    report.output = args.output
    with atomic_outputs() as out:
        pruner.stage(out, args.output, SaveOptions(args.external_data))
        if args.report:
            out.stage(args.report, lambda staged: staged.write_text(report.to_json()))
    if not args.json:
        print(format_fused(report, verbose=args.verbose))
    return report


FUSED_TOLERANCE = 1e-4  # relative L2 error of a fused model's outputs: fusion is exact up to float rounding


def run_apply(args, progress: Progress) -> Report:
    """Re-apply a plan saved with --save-plan: the same edits (removed blocks, channels, fusion), in
    order, without scoring again."""
    memory_limit = _check_validation_options(args)
    paths_plan = paths(args).check()
    recipe = _read_plan(args.plan)
    report = Report(input=args.input, output=None, options={"plan": args.plan})
    model_file, shapes = _read(args, paths_plan, report, progress)
    feeds = read_inputs_file(args.inputs, onnx_in.model_inputs(model_file.proto)) if args.inputs else None
    pruner = _analyse(args, model_file, shapes, report, progress)
    first = recipe.steps[0] if recipe.steps else None
    if first is not None and first.kind == CHANNELS:  # the first step names groups of this very model
        _check_plan_fits(first.payload, pruner, args)
    feeds, reference = _run_original(args, pruner, feeds, memory_limit, report, progress)
    original = pruner.depgraph
    with progress.stage("rewrite") as stage:
        try:
            pruner.replay(recipe)
        except PlanError as exc:
            raise InputError(f"plan {args.plan} does not fit {args.input}: {exc}") from None
    report.timings_s["plan"] = stage.seconds
    only = recipe.steps[0].payload if len(recipe.steps) == 1 and first.kind == CHANNELS else None
    record_plan(only, report, original, pruner.plans)
    report.subgraphs = list(pruner.body_notes)
    return _check_and_write(args, pruner, report, feeds, reference, None, only, progress)


def _read_plan(path: str) -> Recipe:
    try:
        return Recipe.from_json(Path(path).read_text(encoding="utf-8"))
    except (PlanError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise InputError(f"plan {path}: not a plan written by --save-plan ({type(exc).__name__}: "
                         f"{(str(exc).splitlines() or [''])[0]})") from None


def _check_plan_fits(plan: Plan, pruner: Pruner, args) -> None:
    """A plan names groups by id, size and root: it fits only the model (and analysis) it was made on."""
    groups = pruner.depgraph.groups
    for d in plan.decisions:
        group = groups[d.group] if 0 <= d.group < len(groups) else None
        problem = ("the model has no such group" if group is None else
                   f"the model's group {d.group} is {group.size} channels at {group.root}" if
                   (group.size, str(group.root)) != (d.size, d.root) else
                   f"the model's group {d.group} cannot be pruned" if not group.prunable else
                   "its channels are out of range or all of them" if
                   any(not 0 <= c < d.size for c in d.removed) or len(set(d.removed)) >= d.size else None)
        if problem:
            raise InputError(f"plan {args.plan} does not fit {args.input}: it prunes group {d.group} "
                             f"({d.size} channels at {d.root}), {problem} (was the plan saved from this model, "
                             "with the same --input-shape and --prune-head-dim?)")


HOLDOUT = RecoveryOptions.holdout  # one split of --calib for scoring, recovery and fidelity alike


def _fit_part(data: CalibrationSet | None, args) -> CalibrationSet | None:
    """The calibration samples criteria score on: all but the held-out part (recovery, which
    splits the same way with the same seed, fits on the same samples)."""
    return data.split(HOLDOUT, args.seed)[0] if data is not None else None


def _attribution(pruner: Pruner, args, feeds, sample: CalibrationSet, summary) -> list[dict]:
    """What bought the speed (onnxprune.attribution): the model after each recipe step timed side by
    side with the original in one run (one step: the summary's own figure), with MACs and cosine."""
    stages = replay_stages(pruner.fresh(), pruner.recipe.steps)
    if len(stages) > 1:
        def time_all(graphs):
            return pruner.latency_of(graphs, _latency_options(args), args.provider, feeds=feeds)
    else:
        def time_all(graphs):
            return [summary.spread]
    return attribute(stages, pruner.graph, pruner.registry, time_all,
                     lambda graph: pruner.fidelity_of(graph, sample, args.provider).cosine)


def _fidelity_sample(pruner: Pruner, data: CalibrationSet | None, args, feeds=None) -> CalibrationSet:
    """Where output agreement with the original is measured: the held-out part of the calibration
    samples (which neither the criteria nor recovery saw), else the user's own ``--inputs`` (random
    inputs say little of a model of text or images), else a few random samples, else the validation
    inputs."""
    if data is not None:
        sample = data.split(HOLDOUT, args.seed)[1]
        sample = CalibrationSet(sample.arrays, "held-out calibration samples")
    elif getattr(args, "inputs", None) and feeds is not None:
        sample = CalibrationSet(feeds, "inputs from --inputs",
                                whole=not has_batch_axis(pruner.original_graph.inputs))
    else:
        try:
            sample = pruner.random_inputs(8, args.seed)
        except OnnxPruneError:  # dynamic dims: the validation feeds (stand-in sizes) instead
            sample = CalibrationSet(pruner.feeds(seed=args.seed), "random inputs")
    return sample


# ----------------------------------------------------------------------------- sensitivity
def _ratio_from_path(spec: str | None) -> str | None:
    return spec.rpartition(":")[0] or None if spec else None


def _ratios_from(spec: str | None) -> list[tuple[str, float]]:
    """``SENS.json:MAXERR`` -> the (pattern, ratio) pairs that report suggests for that error budget."""
    if not spec:
        return []
    path, _, budget = spec.rpartition(":")
    try:
        if not path:
            raise ValueError
        max_error = float(budget)
    except ValueError:
        raise OptionError(f"--ratio-from '{spec}': expected SENS.json:MAXERR, e.g. sens.json:0.01") from None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--ratio-from {path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"--ratio-from {path}: not a sensitivity report written by onnxprune sensitivity "
                         "(not text)") from None
    sensitivity = Sensitivity.from_json(text, f"--ratio-from {path}")
    sensitivity.check_suggests(max_error, "cosine", f"--ratio-from {spec}")
    return sensitivity.suggest(max_error)


def _parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        ratios = []
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise OptionError(f"--ratios '{text}': expected ratios in (0, 1) separated by commas, e.g. 0.25,0.5")
    return ratios


def run_sensitivity(args, progress: Progress) -> Sensitivity:
    ratios = _parse_ratios(args.ratios)
    options = PruneOptions(criterion=args.criterion or default_criterion(bool(args.calib)), round_to=args.round_to,
                           seed=args.seed,
                           prune_head_dim=args.prune_head_dim).check()
    if args.samples < 1:
        raise OptionError(f"--samples must be >= 1, got {args.samples}")
    if CRITERIA[options.criterion].data_driven and not args.calib:
        raise OptionError(f"--criterion {options.criterion} scores channels on data: give --calib FILE.npz")
    check_provider(args.provider)
    paths_plan = paths(args).check()
    if args.plot:
        check_plot(args.plot)
    report = Report(input=args.input)
    model_file, shapes = _read(args, paths_plan, report, progress)
    data = CalibrationSet.load(args.calib, onnx_in.model_inputs(model_file.proto)) if args.calib else None
    warnings = [data.unused_warning()] if data is not None and data.unused_warning() else []
    data = data.take(args.samples) if data is not None else None
    pruner = _analyse(args, model_file, shapes, report, progress)
    if not pruner.prunable_groups():
        raise _nothing_prunable(args, pruner, report)
    data = data if data is not None else pruner.random_inputs(min(args.samples, 8), args.seed)
    live = progress.enabled and sys.stderr.isatty()  # like Progress: nothing live off a terminal
    with progress.stage("sensitivity"):
        result = pruner.sensitivity(data, ratios=ratios, options=options, blocks=args.blocks, provider=args.provider,
                                    progress=lambda jobs: tqdm(jobs, desc="[onnxprune] sensitivity", unit="prune",
                                                               leave=False, file=sys.stderr, disable=not live))
    if args.suggest is not None:
        result.check_suggests(args.suggest, args.error, f"--suggest {args.suggest:g}")
    with atomic_outputs() as out:
        if args.plot:
            out.stage(args.plot, lambda staged: result.plot(str(staged), args.error, fmt=plot_format(args.plot)))
        if args.report:
            out.stage(args.report, lambda staged: staged.write_text(result.to_json()))
    if not args.json:
        print(result.table())
        if args.suggest is not None:
            print("suggested: " + " ".join(shlex.quote(w) for w in result.ratio_for_options(args.suggest, args.error)))
        for warning in warnings:
            print(f"WARNING   {warning}")
    return result


__all__ = ["main", "build_parser", "paths", "InputError"]
