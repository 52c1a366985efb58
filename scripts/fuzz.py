"""Fuzz the CLI contract with many random graphs (the CI property test runs a few hundred).

    python scripts/fuzz.py --n 2000 [--start 0] [--corrupted 500] [--rerun-every 1]

Valid random graphs (tests/support/random_graphs.py) must prune to a model
that passes the full checker and runs with finite outputs of unchanged names
and shapes, or say "nothing to prune" (exit 3); reruns are byte-identical;
the input is never touched; damaged models fail in one line (exit 1). Prints
the counts and every violation with its seed (rerun one with --start SEED --n 1).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from onnxprune.cli import main  # noqa: E402
from support.random_graphs import check_contract, check_corrupted, scratch_folder  # noqa: E402


def run_cli(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def run(label, check, seeds) -> int:
    folder, codes, bad, start = scratch_folder(), Counter(), 0, time.perf_counter()
    try:
        for seed in seeds:
            outcome = check(seed, folder)
            codes[outcome.code] += 1
            for problem in outcome.problems:
                bad += 1
                print(f"{label} seed {seed}: {problem}", flush=True)
            for path in folder.iterdir():
                path.unlink() if path.is_file() else shutil.rmtree(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - start
    print(f"{label}: {sum(codes.values())} graphs in {seconds:.1f}s, exit codes "
          f"{dict(sorted(codes.items()))}, {bad} violations", flush=True)
    return bad


def main_fuzz() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="valid random graphs")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--corrupted", type=int, default=200, help="damaged models")
    parser.add_argument("--rerun-every", type=int, default=1, help="check byte-identical reruns every K graphs")
    args = parser.parse_args()
    seeds = range(args.start, args.start + args.n)
    bad = run("valid", lambda s, f: check_contract(s, run_cli, f, rerun=s % args.rerun_every == 0), seeds)
    bad += run("damaged", lambda s, f: check_corrupted(s, run_cli, f),
               range(args.start, args.start + args.corrupted))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main_fuzz())
