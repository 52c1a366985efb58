#!/usr/bin/env python
"""Export the example ONNX models used by onnxprune's tests and benchmarks.

The models have random (untrained) weights drawn from a fixed seed. BatchNorm
running statistics and affine parameters are randomized too, so that channels
differ from each other (otherwise every channel of a freshly initialized BN
layer is identical, which makes importance ranking meaningless).

Committed models (written to ``--out-dir``, default ``models/``):

* ``resnet_small.onnx``      ResNet-18-style, widths 16/32/64/128, 100 classes
* ``mobilenetv2_small.onnx`` MobileNetV2, width_mult=0.5, 100 classes
                             (same architecture and module names as
                             ``torchvision.models.mobilenet_v2``)

With ``--extra``, larger benchmark models from torchvision are exported into
``<out-dir>/extra/`` (not committed). Any that cannot be built or exported, or
that would exceed ``--max-extra-mib``, is skipped with a message.

torch is needed only by this script, never by the onnxprune package:

    pip install torch==2.13.0
    pip install --no-deps torchvision==0.28.0 pillow   # only for --extra

All models: input ``input`` float32 [1, 3, 224, 224] (static batch 1),
output ``output``, opset 17, exported in eval mode with constant folding by
the TorchScript-based exporter (``dynamo=False``); BatchNorm is therefore
folded into the preceding Conv by the exporter, as in most models users have.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import traceback
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 0
OPSET = 17
INPUT_SHAPE = (1, 3, 224, 224)
COMMITTED_MAX_MB = 5.0  # MiB


# --------------------------------------------------------------------------
# Hand-written architectures (no torchvision needed for the committed models)
# --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNetSmall(nn.Module):
    """ResNet-18 layout (basic blocks [2, 2, 2, 2]) with narrow stages.

    Module names follow torchvision's ResNet (conv1/bn1/layerN/fc).
    """

    def __init__(self, widths=(16, 32, 64, 128), blocks=(2, 2, 2, 2), num_classes=100):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(widths[0], blocks[0], 1)
        self.layer2 = self._make_layer(widths[1], blocks[1], 2)
        self.layer3 = self._make_layer(widths[2], blocks[2], 2)
        self.layer4 = self._make_layer(widths[3], blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)

    def _make_layer(self, planes, n, stride):
        layers = [BasicBlock(self.inplanes, planes, stride)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    """Same layout as torchvision.ops.Conv2dNormActivation (conv, bn, relu6)."""

    def __init__(self, cin, cout, k=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden, k=1))
        layers += [
            ConvBNAct(hidden, hidden, k=3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """Equivalent of torchvision.models.mobilenet_v2 (identical state_dict keys)."""

    SETTING = [
        # t, c, n, s
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]

    def __init__(self, width_mult=1.0, num_classes=1000, dropout=0.2):
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features = [ConvBNAct(3, cin, stride=2)]
        for t, c, n, s in self.SETTING:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvBNAct(cin, self.last_channel, k=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------
# Weight randomization
# --------------------------------------------------------------------------


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = SEED, reinit_weights: bool = True) -> nn.Module:
    """Deterministically (re)initialize ``model`` in module order.

    Conv: Kaiming-normal (fan_in, so activations keep a sane scale through
    the eval-mode network); Linear: N(0, 1/in_features), bias 0.
    BatchNorm: running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5),
    gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1)  (0.1 is the standard deviation).
    """
    g = torch.Generator().manual_seed(seed)

    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=g) * std)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    for m in model.modules():
        if isinstance(m, nn.Conv2d) and reinit_weights:
            fan_in = m.weight[0].numel()
            normal(m.weight, (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Linear) and reinit_weights:
            normal(m.weight, (1.0 / m.in_features) ** 0.5)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            normal(m.running_mean, 0.1)
            uniform(m.running_var, 0.5, 1.5)
            if m.affine:
                uniform(m.weight, 0.5, 1.5)
                normal(m.bias, 0.1)
    return model.eval()


def build_resnet_small() -> nn.Module:
    torch.manual_seed(SEED)
    return randomize_(ResNetSmall(num_classes=100), SEED)


def build_mobilenetv2_small() -> nn.Module:
    torch.manual_seed(SEED)
    return randomize_(MobileNetV2(width_mult=0.5, num_classes=100), SEED)


# --------------------------------------------------------------------------
# torchvision (only for --extra and an optional architecture cross-check)
# --------------------------------------------------------------------------


def import_torchvision_models():
    """Import torchvision.models, tolerating a torchvision whose C++ ops fail to load.

    torchvision registers fake (meta) kernels for its C++ ops at import time;
    when the extension library cannot be loaded that raises. The model
    constructors are pure Python, so skip those registrations while importing.
    Returns the module or None (with a printed reason).
    """
    import torch.library as tlib

    orig = tlib.register_fake

    def register_fake(op, *args, **kwargs):
        if isinstance(op, str) and op.startswith("torchvision::"):
            return lambda fn=None, /, *a, **k: fn
        return orig(op, *args, **kwargs)

    tlib.register_fake = register_fake
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchvision.models as tvm
        return tvm
    except Exception as e:  # noqa: BLE001
        print(f"[skip] torchvision not usable: {type(e).__name__}: {e}")
        return None
    finally:
        tlib.register_fake = orig


def check_mobilenetv2_matches_torchvision(model: nn.Module, tvm) -> None:
    ref = tvm.mobilenet_v2(width_mult=0.5, num_classes=100).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ref(x) - model(x)).abs().max().item()
    assert diff == 0.0, f"hand-written MobileNetV2 differs from torchvision's: {diff}"
    print("  check: identical to torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=100)")


# --------------------------------------------------------------------------
# Export + verification
# --------------------------------------------------------------------------


def _export(model: nn.Module, x: torch.Tensor, path: str) -> str:
    """Export with the TorchScript exporter; fall back to dynamo if it is gone."""
    common = dict(
        input_names=["input"],
        output_names=["output"],
        opset_version=OPSET,
        do_constant_folding=True,
        export_params=True,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notice of the TorchScript exporter
            torch.onnx.export(model, (x,), path, dynamo=False, **common)
        return "torchscript (dynamo=False)"
    except TypeError as e:
        if "dynamo" not in str(e):
            raise
    # Newer torch without the TorchScript exporter: needs `pip install onnxscript`.
    torch.onnx.export(model, (x,), path, dynamo=True, external_data=False, optimize=True, **common)
    return "dynamo"


def export_and_verify(name: str, model: nn.Module, path: str, max_mib: float) -> dict:
    model = model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    est_mib = n_params * 4 / 2**20
    if est_mib > max_mib:
        raise RuntimeError(f"~{est_mib:.1f} MiB of float32 weights exceeds the {max_mib:g} MiB cap")

    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(SEED + 1))
    with torch.no_grad():
        ref = model(x).numpy()
    if not np.all(np.isfinite(ref)):
        raise RuntimeError("torch output is not finite")

    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    # Export into a private temp dir so a stray external-data file can't litter out-dir.
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        tmp_path = os.path.join(tmp, os.path.basename(path))
        exporter = _export(model, x, tmp_path)
        produced = sorted(os.listdir(tmp))
        if produced != [os.path.basename(path)]:
            raise RuntimeError(f"exporter wrote extra files (external data?): {produced}")
        m = onnx.load(tmp_path)
        for t in m.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                raise RuntimeError(f"initializer {t.name} uses external data")
        m.doc_string = (
            f"onnxprune example model '{name}': random (untrained) weights, seed {SEED}; "
            "generated by scripts/export_models.py"
        )
        onnx.save(m, tmp_path)
        os.replace(tmp_path, path)

    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    ins = [(i.name, [dd.dim_value if dd.HasField("dim_value") else dd.dim_param for dd in i.type.tensor_type.shape.dim]) for i in m.graph.input]
    outs = [(o.name, [dd.dim_value if dd.HasField("dim_value") else dd.dim_param for dd in o.type.tensor_type.shape.dim]) for o in m.graph.output]
    onnx_params = sum(int(np.prod(t.dims)) for t in m.graph.initializer)

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (got,) = sess.run(["output"], {"input": x.numpy()})
    max_diff = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max())
    if got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-3, atol=1e-4 * max(1.0, scale)):
        raise RuntimeError(f"onnxruntime output differs from torch: max|diff|={max_diff:g}")

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    ops = sorted({n.op_type for n in m.graph.node})
    print(f"{name}: {path}")
    print(f"  size:     {size / 2**20:.2f} MiB ({size} bytes), sha256 {sha[:16]}")
    print(f"  params:   {n_params:,} torch parameters; {onnx_params:,} values in ONNX initializers")
    print(f"  graph:    opset {opset}, exporter {exporter}, {len(m.graph.node)} nodes, ops {ops}")
    print(f"  io:       inputs {ins} -> outputs {outs}")
    print("  checker:  onnx.checker.check_model(full_check=True) ok")
    print(f"  runtime:  onnxruntime {ort.__version__} CPU ran it, output {list(got.shape)}, "
          f"max|ort - torch| = {max_diff:.2e} (|output| max {scale:.3g})")
    return dict(name=name, path=path, size=size, params=n_params)


EXTRA = [
    ("resnet18", dict(num_classes=1000)),
    ("mobilenet_v2", dict(num_classes=1000)),
    ("shufflenet_v2_x0_5", dict(num_classes=1000)),
    ("resnet50", dict(num_classes=1000)),
    ("densenet121", dict(num_classes=1000)),
    ("efficientnet_b0", dict(num_classes=1000)),
    ("convnext_tiny", dict(num_classes=1000)),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default="models", help="where to write the committed models (default: models)")
    ap.add_argument("--extra", action="store_true", help="also export larger torchvision models into OUT_DIR/extra/")
    ap.add_argument("--max-extra-mib", type=float, default=100.0, help="skip extra models larger than this (default 100)")
    args = ap.parse_args(argv)

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    print(f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    tvm = import_torchvision_models()

    failures = []
    mnv2 = build_mobilenetv2_small()
    if tvm is not None:
        check_mobilenetv2_matches_torchvision(mnv2, tvm)
    for name, model in [("resnet_small", build_resnet_small()), ("mobilenetv2_small", mnv2)]:
        path = os.path.join(args.out_dir, f"{name}.onnx")
        r = export_and_verify(name, model, path, COMMITTED_MAX_MB)
        if r["size"] >= COMMITTED_MAX_MB * 2**20:
            failures.append(name)
            print(f"[error] {name} is {r['size'] / 2**20:.2f} MiB, over the {COMMITTED_MAX_MB} MiB limit")

    if args.extra:
        extra_dir = os.path.join(args.out_dir, "extra")
        if tvm is None:
            print("[skip] --extra: torchvision is unavailable (pip install --no-deps torchvision==0.28.0 pillow)")
        for name, kwargs in EXTRA if tvm is not None else []:
            try:
                torch.manual_seed(SEED)
                model = randomize_(getattr(tvm, name)(weights=None, **kwargs), SEED, reinit_weights=False)
                export_and_verify(name, model, os.path.join(extra_dir, f"{name}.onnx"), args.max_extra_mib)
            except Exception as e:  # noqa: BLE001
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                print(f"[skip] {name}: {type(e).__name__}: {msg}")
                if os.environ.get("EXPORT_MODELS_DEBUG"):
                    traceback.print_exc()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
