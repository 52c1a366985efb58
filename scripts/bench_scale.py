"""Scale of the tool: time and peak memory to prune a LLaMA-shaped decoder of 100M and 1B parameters,
and in-process analyse + prune of ResNet-50 and ViT next to Torch-Pruning's on the same network.

    python scripts/bench_scale.py                          # decoders 100M and 1B, CNN/ViT in-process
    python scripts/bench_scale.py --sizes 100M --before /work/main   # side by side with another checkout

Decoders (``scripts/make_llm.py``, fp32, external data, made once into ``--models``): the command line
in a child process, ``--ratio 0.5 --prune-hidden`` (heads and MLP channels are pruned by default), with
``--no-validate`` unless ``--validate``; the child reports its wall time, its CPU time (what a shared,
loaded machine distorts least) and its peak resident memory (getrusage: mapped weights that were read
count too). Run the whole script with ``nice`` on a shared machine. The growth factor is the time of
each size over the smallest's, next to the ratio of their parameters. ``--before DIR`` runs the same
commands with another checkout of onnxprune (sizes up to ``--before-max``: the old code held several
copies of the weights), interleaved with this one.

In-process (one thread, interleaved rounds, median and spread of the ratio): onnxprune's load +
analyse + prune of ResNet-50 (112 px) and ViT (``models/extra``), and Torch-Pruning's dependency graph
build + prune (MagnitudePruner, ratio 0.5) of torchvision's resnet50 in the same run when the
``torch_pruning`` package imports (``--torch-pruning DIR`` adds a folder it was pip-installed into
with ``pip install --target DIR torch-pruning --no-deps``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import make_llm  # noqa: E402

EXTRA = Path("/work/main/models/extra") if Path("/work/main/models/extra").is_dir() else ROOT / "models" / "extra"
CNN = EXTRA / "speed" / "resnet50_112_fanin.onnx"
VIT = EXTRA / "architectures" / "vit_ts.onnx"

CHILD = """
import json, resource, sys, time
start = time.perf_counter()
from onnxprune.cli import main
imported = time.perf_counter()
code = main(sys.argv[1:])
end = time.perf_counter()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": code, "wall_s": end - start, "import_s": imported - start,
                  "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}), file=sys.stderr)
"""


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def decoder(size: str, folder: Path) -> Path:
    path = folder / f"llm_{size}.onnx"
    if not (path.exists() and (folder / f"{path.name}.data").exists()):
        need = make_llm.config_for(make_llm.parse_count(size)).params * 4 * 2.5  # input + output + slack
        free = shutil.disk_usage(folder).free
        if free < need:
            raise SystemExit(f"{folder}: {free / 2**30:.1f} GiB free, {need / 2**30:.1f} GiB needed for the {size} "
                             "decoder and its pruned copy")
        print(f"making {path} ...", flush=True)
        make_llm.main([str(path), "--params", size])
    return path


def prune_child(checkout: Path, model: Path, out: Path, validate: bool) -> dict:
    """One CLI run in a child process; its stage timings from --report."""
    report = out.with_suffix(".json")
    args = [str(model), str(out), "--ratio", "0.5", "--prune-hidden", "-q", "--report", str(report),
            "--round-to", "8"]
    args += ["--runs", "0"] if validate else ["--no-validate"]
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, cwd=out.parent,  # not this checkout
                          capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"code": done.returncode, "error": (lines or ["killed"])[-1]}
    if result["code"] != 0:
        result["error"] = lines[-2] if len(lines) > 1 else "failed"
        return result
    result["timings"] = json.loads(report.read_text()).get("timings_s", {})
    result["out_mib"] = sum(p.stat().st_size for p in out.parent.glob(out.name + "*")) / 2**20
    for p in out.parent.glob(out.name + "*"):
        p.unlink()
    report.unlink()
    return result


def bench_decoders(args) -> None:
    folder = Path(args.models)
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / "out"
    work.mkdir(exist_ok=True)
    checkouts = [("this", ROOT)] + ([("before", Path(args.before))] if args.before else [])
    rows = []
    for size in args.sizes.split(","):
        model = decoder(size, folder)
        params = make_llm.config_for(make_llm.parse_count(size)).params
        disk = sum(p.stat().st_size for p in folder.glob(model.name + "*")) / 2**20
        for label, checkout in checkouts:
            if label == "before" and make_llm.parse_count(size) > make_llm.parse_count(args.before_max):
                continue
            print(f"{size} ({label}) ... load {loadavg()}", flush=True)
            result = prune_child(checkout, model, work / f"{label}_{size}.onnx", args.validate)
            rows.append((size, label, params, disk, result, loadavg()))
    smallest = {}
    print(f"\n## Decoder, --ratio 0.5 --prune-hidden{'' if args.validate else ' --no-validate'} (child process)\n")
    print("| size | code | params | on disk MiB | wall s | CPU s | import s | peak RSS MiB | RSS / disk "
          "| growth (CPU time, params) | stages s (wall) | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, label, params, disk, r, load in rows:
        if "error" in r:
            print(f"| {size} | {label} | {params / 1e6:.0f}M | {disk:.0f} | failed: {r['error']} | | | | | | | {load} |")
            continue
        base = smallest.setdefault(label, (r["cpu_s"], params))
        growth = f"x{r['cpu_s'] / base[0]:.1f} for x{params / base[1]:.1f}"
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["timings"].items() if v >= 0.05)
        print(f"| {size} | {label} | {params / 1e6:.0f}M | {disk:.0f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
              f"{r['import_s']:.1f} | "
              f"{r['peak_mib']:.0f} | {r['peak_mib'] / disk:.2f} | {growth} | {stages} | {load} |")


def bench_in_process(args) -> None:
    import numpy as np

    from onnxprune import Pruner
    from onnxprune.options import PruneOptions

    def onnxprune_time(path: Path) -> float:
        start = time.perf_counter()
        pruner = Pruner.load(path)
        pruner.prune(PruneOptions(ratio=0.5, round_to=8))
        return time.perf_counter() - start

    torch_case = None
    if args.torch_pruning:
        sys.path.insert(0, args.torch_pruning)
    try:
        import torch
        import torch_pruning as tp
        from export_models import import_torchvision_models
        torch.set_num_threads(1)
        tvm = import_torchvision_models()

        def tp_time() -> float:
            model = tvm.resnet50(weights=None).eval()
            example = torch.randn(1, 3, 112, 112)
            start = time.perf_counter()
            pruner = tp.pruner.MagnitudePruner(model, example, tp.importance.MagnitudeImportance(p=2),
                                               pruning_ratio=0.5, ignored_layers=[model.fc])
            pruner.step()
            return time.perf_counter() - start
        torch_case = tp_time
    except Exception as exc:  # noqa: BLE001 - torch_pruning missing or unusable: say so
        print(f"\nTorch-Pruning not measured: {type(exc).__name__}: {exc}")
    os.environ["OMP_NUM_THREADS"] = "1"
    cases = [(name, path) for name, path in (("ResNet-50 (112 px)", CNN), ("ViT (vit_ts)", VIT)) if path.exists()]
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    times["Torch-Pruning ResNet-50"] = []
    for _ in range(args.rounds):  # interleaved
        for name, path in cases:
            times[name].append(onnxprune_time(path))
        if torch_case is not None:
            times["Torch-Pruning ResNet-50"].append(torch_case())
    print(f"\n## In-process analyse + prune (ratio 0.5, one thread, {args.rounds} interleaved rounds, "
          f"load {loadavg()})\n")
    print("| model | median s | min..max s | vs Torch-Pruning (median, spread of per-round ratios) |")
    print("|---|---|---|---|")
    reference = times["Torch-Pruning ResNet-50"]
    for name, values in times.items():
        if not values:
            continue
        ratio = ""
        if reference and name.startswith("ResNet-50"):
            per_round = [a / b for a, b in zip(values, reference)]
            ratio = f"x{statistics.median(per_round):.1f} ({min(per_round):.1f}..{max(per_round):.1f})"
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}..{max(values):.2f} | {ratio} |")
    del np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100M,1B", help="decoder sizes, smallest first (make_llm --params)")
    parser.add_argument("--models", default="/tmp/onnxprune-scale", help="where the decoders are made and kept")
    parser.add_argument("--validate", action="store_true", help="validate in onnxruntime too (--runs 0)")
    parser.add_argument("--before", metavar="DIR", help="another onnxprune checkout to run side by side")
    parser.add_argument("--before-max", default="300M", help="largest size run with --before")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the in-process timings")
    parser.add_argument("--torch-pruning", metavar="DIR", help="a folder torch_pruning was pip-installed into")
    parser.add_argument("--skip-decoders", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_decoders:
        bench_decoders(args)
    if not args.skip_in_process:
        bench_in_process(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
