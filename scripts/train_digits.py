#!/usr/bin/env python
"""Train the digits CNN that the accuracy benchmark and the recovery tests measure with.

A real trained model (not random weights), small enough to commit, on data that
ships with scikit-learn (no download): so "accuracy after pruning" can be
asserted offline, in CI. Writes into ``--out-dir`` (default ``models/digits/``):

* ``digits_cnn.onnx``  the trained CNN, BatchNormalization nodes kept (not folded
                       into the convs, so BN re-estimation has something to work on)
* ``calib.npz``        calibration inputs: ``input`` float32 [N, 1, 8, 8]
* ``heldout.npz``      held-out inputs, same layout
* ``labels.npz``       ``calib`` and ``heldout``: int64 [N] digit labels (kept apart from
                       the inputs so either input file can be passed as ``--calib``/``--inputs``)
* ``digits.json``      what was measured at export: held-out accuracy, split sizes, names

Needs ``pip install torch==2.13.0 scikit-learn`` (this script only; onnxprune never
imports torch). Deterministic: the same torch version writes the same model.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
OPSET = 17
INPUT = "input"
OUTPUT = "logits"
HELDOUT = 0.3  # fraction of the 1,797 digits never seen in training
CALIB = 256  # calibration samples, drawn from the training part


def conv_bn(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class Block(nn.Module):
    """ResNet basic block: conv-BN-ReLU, conv-BN, plus the input (1x1 conv-BN when the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride)
        self.conv2 = conv_bn(cout, cout)
        self.shortcut = conv_bn(cin, cout, stride, k=1) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class DigitsCNN(nn.Module):
    """8x8x1 -> stem 32 -> block 32 (8x8) -> block 48 stride 2 (4x4) -> block 48 -> GAP -> FC 10."""

    def __init__(self, widths=(32, 48)):
        super().__init__()
        w1, w2 = widths
        self.stem = conv_bn(1, w1)
        self.layer1 = Block(w1, w1)
        self.layer2 = nn.Sequential(Block(w1, w2, stride=2), Block(w2, w2))
        self.fc = nn.Linear(w2, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(F.relu(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def load_splits():
    """Inputs scaled to [0, 1] as float32 [N, 1, 8, 8]; a stratified held-out split; calibration from training."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=HELDOUT, random_state=SEED, stratify=y)
    calib_idx = np.random.default_rng(SEED).choice(len(x_train), CALIB, replace=False)
    return (x_train, y_train), (x_train[calib_idx], y_train[calib_idx]), (x_test, y_test)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, log) -> None:
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=epochs * ((len(x) + 63) // 64))
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xs), generator=gen)
        total = 0.0
        for start in range(0, len(xs), 64):
            idx = order[start:start + 64]
            batch = xs[idx]
            # light augmentation: shift by up to one pixel, so the net does not memorize the training set
            dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
            batch = torch.roll(batch, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(batch), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 10 == 0:
            log(f"epoch {epoch + 1}: loss {total / len(xs):.4f}")


def export(model: nn.Module) -> onnx.ModelProto:
    """TorchScript exporter without constant folding, so BatchNormalization stays a node."""
    model.eval()
    buffer = io.BytesIO()
    torch.onnx.export(model, torch.zeros(1, 1, 8, 8), buffer, dynamo=False, opset_version=OPSET,
                      input_names=[INPUT], output_names=[OUTPUT], do_constant_folding=False,
                      training=torch.onnx.TrainingMode.EVAL,
                      dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto


def onnx_accuracy(proto: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = session.run(None, {INPUT: x})[0]
    return float((logits.argmax(1) == y).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="models/digits")
    ap.add_argument("--epochs", type=int, default=60)
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # thread count changes float summation order
    (x_train, y_train), (x_calib, y_calib), (x_test, y_test) = load_splits()
    model = DigitsCNN()
    train(model, x_train, y_train, args.epochs, log)
    proto = export(model)

    with torch.no_grad():
        torch_acc = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    acc = onnx_accuracy(proto, x_test, y_test)
    bn_nodes = sum(n.op_type == "BatchNormalization" for n in proto.graph.node)
    params = sum(p.numel() for p in model.parameters())

    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "digits_cnn.onnx")
    onnx.save(proto, path)
    np.savez_compressed(os.path.join(args.out_dir, "calib.npz"), **{INPUT: x_calib})
    np.savez_compressed(os.path.join(args.out_dir, "heldout.npz"), **{INPUT: x_test})
    np.savez_compressed(os.path.join(args.out_dir, "labels.npz"), calib=y_calib, heldout=y_test)
    calib_acc = onnx_accuracy(proto, x_calib, y_calib)
    meta = {"model": "digits_cnn.onnx", "input": INPUT, "output": OUTPUT, "opset": OPSET, "seed": SEED,
            "parameters": params, "batchnorm_nodes": bn_nodes, "torch": torch.__version__,
            "heldout": {"samples": len(y_test), "correct": int(round(acc * len(y_test))), "accuracy": acc},
            "calib": {"samples": len(y_calib), "accuracy": calib_acc}, "train_samples": len(y_train)}
    with open(os.path.join(args.out_dir, "digits.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"wrote {path}: {params} parameters, {bn_nodes} BatchNormalization nodes")
    print(f"held-out accuracy: onnxruntime {acc:.4f} ({meta['heldout']['correct']}/{len(y_test)}), "
          f"torch {torch_acc:.4f}; calibration accuracy {calib_acc:.4f} ({len(y_calib)} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
