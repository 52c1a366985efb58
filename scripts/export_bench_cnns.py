#!/usr/bin/env python
"""Export the torchvision CNNs of ``scripts/bench_latency_cnn.py`` at a modest resolution.

    python scripts/export_bench_cnns.py [--size 160] [--out-dir models/extra/cnn160]

ResNet-50, MobileNetV2, MobileNetV3-small, EfficientNet-B0, RegNetX-400MF and
ShuffleNetV2 x1.0, random weights from a fixed seed (BatchNorm statistics
randomized, see ``export_models.randomize_``), input ``input`` [1, 3, S, S],
opset 17, into a git-ignored folder. Small inputs keep the latency benchmark
to minutes on a shared machine while the layer widths stay those of the
real models (widths, not resolution, decide which kernels run).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_models import SEED, _export, import_torchvision_models, randomize_  # noqa: E402

MODELS = ("resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf",
          "shufflenet_v2_x1_0")
ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=160, help="input height and width (default 160)")
    ap.add_argument("--out-dir", default=None, help="default: models/extra/cnn<size>")
    ap.add_argument("models", nargs="*", default=list(MODELS))
    args = ap.parse_args(argv)
    out = Path(args.out_dir or ROOT / "models" / "extra" / f"cnn{args.size}")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    tvm = import_torchvision_models()
    if tvm is None:
        return 1
    for name in args.models:
        path = out / f"{name}.onnx"
        if path.exists():
            print(f"{name}: {path} (already there)")
            continue
        torch.manual_seed(SEED)
        model = randomize_(getattr(tvm, name)(weights=None), SEED, reinit_weights=False).eval()
        x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(SEED + 1))
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            staged = os.path.join(tmp, path.name)
            _export(model, x, staged)
            onnx.checker.check_model(onnx.load(staged), full_check=True)
            os.replace(staged, path)
        print(f"{name}: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
