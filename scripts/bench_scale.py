"""Scale of the tool: time and peak memory to prune a LLaMA-shaped decoder of 100M and 1B parameters,
and in-process analyse + prune of torchvision CNNs and Transformers next to Torch-Pruning's on the same networks.

    python scripts/bench_scale.py                          # decoders 100M and 1B, torchvision models in-process
    python scripts/bench_scale.py --skip-decoders --cases ResNet-50,Swin-T --rounds 5
    python scripts/bench_scale.py --sizes 100M --before /work/main   # side by side with another checkout

Decoders (``scripts/make_llm.py``, fp32, external data, made once into ``--models``): the command line
in a child process, ``--ratio 0.5 --prune-hidden`` (heads and MLP channels are pruned by default), with
``--no-validate`` unless ``--validate``; the child reports its wall time, its CPU time (what a shared,
loaded machine distorts least) and its peak resident memory (getrusage: mapped weights that were read
count too). Run the whole script with ``nice`` on a shared machine. The growth factor is the time of
each size over the smallest's, next to the ratio of their parameters. ``--before DIR`` runs the same
commands with another checkout of onnxprune (sizes up to ``--before-max``: the old code held several
copies of the weights), interleaved with this one.

In-process (one thread, interleaved rounds): onnxprune's load + analyse + prune (ratio 0.5, widths
multiples of 8) of torchvision's ResNet-50 (112 px), VGG-19, Swin-T and ViT-B/16 (224 px; random
weights, exported once with torch into ``--models``/torchvision), next to Torch-Pruning's dependency
graph build + prune of the same torch model (MagnitudePruner, ratio 0.5, as its torchvision example
prunes them), each run in a child process with a timeout (``--tp-timeout``: a model it cannot handle
may hang). The ratio is of CPU seconds, per round, median and spread. ``torch_pruning`` must import
(``pip install torch-pruning --no-deps``, or ``--torch-pruning DIR`` for a folder it was
pip-installed into with ``--target``); torchvision is installed ``--no-deps`` (its C++ ops need
not load). ``--cases`` picks rows.
"""
from __future__ import annotations

import argparse
import gc
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


# torchvision models timed in process: (row, constructor, image size); weights random (seed 0)
TORCHVISION = (("ResNet-50", "resnet50", 112), ("VGG-19", "vgg19", 224), ("Swin-T", "swin_t", 224),
               ("ViT-B/16", "vit_b_16", 224))

# Torch-Pruning's graph build + prune of one torchvision model, timed in a child process (a model it
# cannot handle may hang: its examples list swin_t as unsupported), as its examples prune torchvision:
# MagnitudePruner, ratio 0.5, the 1000-class classifier ignored, ViT widths rounded to its heads
TP_CHILD = """
import json, resource, sys, time, warnings
import torch, torch.nn as nn
sys.path.insert(0, sys.argv[3])
from export_models import import_torchvision_models
import torch_pruning as tp
torch.set_num_threads(1)
warnings.simplefilter("ignore")
tvm = import_torchvision_models()
torch.manual_seed(0)
model = getattr(tvm, sys.argv[1])(weights=None).eval()
example = torch.randn(1, 3, int(sys.argv[2]), int(sys.argv[2]))
ignored = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1000]
round_to = model.encoder.layers[0].num_heads if isinstance(model, tvm.VisionTransformer) else None
cpu, wall = time.process_time(), time.perf_counter()
pruner = tp.pruner.MagnitudePruner(model, example, tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                                   ignored_layers=ignored, round_to=round_to)
pruner.step()
print(json.dumps({"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}))
"""


def export_torchvision(folder: Path, constructor: str, size: int) -> Path:
    """torchvision's ``constructor`` (random weights, seed 0) exported to ONNX once (TorchScript
    exporter, opset 17, a 1x3xSIZExSIZE input); torchvision's C++ ops need not load."""
    path = folder / f"{constructor}_{size}.onnx"
    if path.exists():
        return path
    import torch
    from export_models import import_torchvision_models
    tvm = import_torchvision_models()
    if tvm is None:
        raise SystemExit("torchvision is not usable (pip install --no-deps torchvision==0.28.0)")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"exporting {path} ...", flush=True)
    torch.manual_seed(0)
    model = getattr(tvm, constructor)(weights=None).eval()
    partial = path.with_suffix(".partial")
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(partial), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["logits"])
    partial.rename(path)
    return path


def onnxprune_time(path: Path) -> dict:
    """Load + analyse + prune (ratio 0.5, widths multiples of 8) in this process: CPU and wall seconds."""
    from onnxprune import Pruner, shapes
    from onnxprune.options import PruneOptions
    shapes._CACHE.clear()  # every round analyses the model afresh (Torch-Pruning keeps nothing either)
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    pruner = Pruner.load(path)
    pruner.prune(PruneOptions(ratio=0.5, round_to=8))
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


def torch_pruning_time(constructor: str, size: int, args) -> dict:
    """Torch-Pruning on the same torchvision model, in a child (one thread): CPU and wall seconds of
    its dependency graph build + prune, or the error."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [args.torch_pruning, os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run([sys.executable, "-c", TP_CHILD, constructor, str(size), str(ROOT / "scripts")],
                              env=env, capture_output=True, text=True, timeout=args.tp_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not done in {args.tp_timeout} s"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        lines = done.stderr.strip().splitlines()
        return {"error": (lines or ["failed"])[-1][:120]}


def bench_in_process(args) -> None:
    """onnxprune in this process next to Torch-Pruning on the same torchvision models, interleaved;
    the ratio is of CPU seconds (what a loaded, shared machine distorts least), per round."""
    os.environ["OMP_NUM_THREADS"] = "1"
    folder = Path(args.models) / "torchvision"
    wanted = [c for c in TORCHVISION if not args.cases or c[0] in args.cases.split(",")]
    paths = {name: export_torchvision(folder, constructor, size) for name, constructor, size in wanted}
    ours: dict[str, list[dict]] = {name: [] for name, _, _ in wanted}
    theirs: dict[str, list[dict]] = {name: [] for name, _, _ in wanted}
    loads = []
    for _ in range(args.rounds):  # interleaved
        for name, constructor, size in wanted:
            ours[name].append(onnxprune_time(paths[name]))
            if not theirs[name] or "error" not in theirs[name][-1]:  # a failure is not retried
                theirs[name].append(torch_pruning_time(constructor, size, args))
            loads.append(float(loadavg()) if loadavg() != "?" else float("nan"))
    print(f"\n## In-process analyse + prune next to Torch-Pruning (ratio 0.5, one thread, {args.rounds} "
          f"interleaved rounds, load {min(loads):.1f}..{max(loads):.1f})\n")
    print("| model | onnxprune CPU s (min..max) | onnxprune wall s | Torch-Pruning CPU s (min..max) "
          "| Torch-Pruning wall s | CPU ratio (median, spread of per-round ratios) |")
    print("|---|---|---|---|---|---|")
    for name, _, size in wanted:
        cpu = [r["cpu_s"] for r in ours[name]]
        wall = [r["wall_s"] for r in ours[name]]
        row = f"| {name} ({size} px) | {_spread(cpu)} | {statistics.median(wall):.2f} | "
        failed = [r["error"] for r in theirs[name] if "error" in r]
        if failed:
            print(row + f"failed: {failed[0]} | | |")
            continue
        tp_cpu = [r["cpu_s"] for r in theirs[name]]
        ratios = [a / b for a, b in zip(cpu, tp_cpu)]
        print(row + f"{_spread(tp_cpu)} | {statistics.median(r['wall_s'] for r in theirs[name]):.2f} | "
              f"x{statistics.median(ratios):.2f} ({min(ratios):.2f}..{max(ratios):.2f}) |")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100M,1B", help="decoder sizes, smallest first (make_llm --params)")
    parser.add_argument("--models", default="/tmp/onnxprune-scale", help="where the decoders are made and kept")
    parser.add_argument("--validate", action="store_true", help="validate in onnxruntime too (--runs 0)")
    parser.add_argument("--before", metavar="DIR", help="another onnxprune checkout to run side by side")
    parser.add_argument("--before-max", default="300M", help="largest size run with --before")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the in-process timings")
    parser.add_argument("--torch-pruning", metavar="DIR", help="a folder torch_pruning was pip-installed into")
    parser.add_argument("--tp-timeout", type=float, default=300, help="seconds one Torch-Pruning run may take")
    parser.add_argument("--cases", help="in-process rows to run, comma-separated (default: "
                        + ",".join(name for name, _, _ in TORCHVISION) + ")")
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
