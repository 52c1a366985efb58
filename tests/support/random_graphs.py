"""Random small valid graphs from the supported operators, and the contract every run must keep.

Used by ``tests/test_property.py`` (a few hundred graphs in CI) and
``scripts/fuzz.py`` (as many as you like). A graph is a chain of random steps
on NCHW tensors (conv, grouped/depthwise conv, BatchNorm, activations,
per-channel and residual elementwise ops, concat, split, channel shuffle,
pooling, resize, pad, transposed conv), then a random head (the 4-D tensor
itself, a 1x1 conv, or pool -> flatten -> Gemm). Everything is seeded: one
seed, one model.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from support.builder import GraphBuilder

OPSETS = (11, 13, 17)


def _shape(b: GraphBuilder, x) -> list:
    return b.shape_of(x)


def _step(b: GraphBuilder, rng: np.random.Generator, pool: list[str]) -> str:
    """One random operation on the tensors made so far; returns the new tensor."""
    x = pool[-1] if rng.random() < 0.7 else pool[int(rng.integers(len(pool)))]
    n, c, h, w = _shape(b, x)
    kind = rng.choice(["conv", "conv", "group", "depthwise", "bn", "act", "act", "const", "residual", "concat",
                       "split", "shuffle", "pool", "resize", "pad", "convT"])
    if kind == "conv":
        return b.conv(x, int(rng.integers(2, 9)), k=int(rng.choice([1, 3])), bias=bool(rng.random() < 0.7))
    if kind == "group" and c % 2 == 0:
        return b.conv(x, 2 * int(rng.integers(1, 4)), k=3, group=2)
    if kind == "depthwise":
        return b.conv(x, c, k=3, group=c)
    if kind == "bn":
        return b.bn(x)
    if kind == "act":
        which = rng.choice(["relu", "leaky", "sigmoid", "hardswish", "relu6", "silu", "tanh"])
        if which == "hardswish" and b.opset < 14:
            which = "relu"
        if which == "leaky":
            return b.op("LeakyRelu", [x], alpha=0.1)
        if which == "sigmoid":
            return b.op("Sigmoid", [x])
        if which == "tanh":
            return b.op("Tanh", [x])
        return getattr(b, which)(x)
    if kind == "const":
        op = rng.choice(["Add", "Mul", "Sub"])
        value = (rng.standard_normal((1, c, 1, 1)) * 0.5 + (1.0 if op == "Mul" else 0.0)).astype(np.float32)
        return b.op(op, [x, b.const(value)])
    if kind == "residual":
        same = [t for t in pool if t != x and _shape(b, t) == [n, c, h, w]]
        if same:
            return b.op("Add", [x, same[int(rng.integers(len(same)))]])
        return b.op("Add", [x, b.conv(x, c, k=1)])
    if kind == "concat":
        other = [t for t in pool if _shape(b, t)[2:] == [h, w]]
        return b.op("Concat", [x, other[int(rng.integers(len(other)))]], axis=1)
    if kind == "split" and c >= 2:
        first = int(rng.integers(1, c))
        parts = b.op("Split", [x, b.const(np.array([first, c - first], np.int64))], n_out=2, axis=1) \
            if b.opset >= 13 else b.op("Split", [x], n_out=2, axis=1, split=[first, c - first])
        return b.op("Concat", [parts[1], parts[0]], axis=1) if rng.random() < 0.5 else parts[int(rng.integers(2))]
    if kind == "shuffle" and c % 2 == 0 and c >= 4:
        y = b.op("Reshape", [x, b.const(np.array([n, 2, c // 2, h, w], np.int64))])
        y = b.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
        return b.op("Reshape", [y, b.const(np.array([n, c, h, w], np.int64))])
    if kind == "pool" and h >= 4 and w >= 4:
        op = rng.choice(["MaxPool", "AveragePool"])
        return b.op(op, [x], kernel_shape=[2, 2], strides=[2, 2])
    if kind == "resize" and h <= 8:
        scales = b.const(np.array([1, 1, 2, 2], np.float32))
        if b.opset >= 13:
            return b.op("Resize", [x, "", scales], mode="nearest")
        return b.op("Resize", [x, b.const(np.zeros(0, np.float32)), scales], mode="nearest")
    if kind == "pad":
        return b.op("Pad", [x, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], mode="constant")
    if kind == "convT" and h <= 8:
        return b.conv_transpose(x, int(rng.integers(1, 6)))
    return b.relu(x)


def random_model(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    b = GraphBuilder(opset=int(rng.choice(OPSETS)), seed=seed, name=f"random_{seed}")
    size = int(rng.choice([4, 6, 8]))
    pool = [b.input("input", [1, int(rng.integers(1, 5)), size, size])]
    pool.append(b.conv(pool[0], int(rng.integers(2, 9)), k=int(rng.choice([1, 3]))))  # a stem owns channels
    for _ in range(int(rng.integers(1, 8))):
        pool.append(_step(b, rng, pool))
    y = pool[-1]
    head = rng.choice(["tensor", "conv", "gemm"], p=[0.15, 0.45, 0.4])  # a bare tensor output blocks all before it
    if head == "conv":
        y = b.conv(y, int(rng.integers(1, 5)), k=1)
    elif head == "gemm":
        y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1), int(rng.integers(1, 6)))
    b.output(b.rename(y, "output"))
    middle = pool[len(pool) // 2]
    if rng.random() < 0.15 and middle not in ("input", y):  # a second output taps the middle of the graph
        b.output(middle)
    return b.build()


@dataclass
class Outcome:
    seed: int
    code: int
    line: str = ""  # the stderr line of a failure
    problems: list[str] = field(default_factory=list)  # contract violations


def check_contract(seed: int, run_cli, folder: Path, rerun: bool = True) -> Outcome:
    """Prune model ``seed`` with ``run_cli(args) -> (code, out, err)`` and check the contract.

    Valid input, so: exit 0 (or 3, nothing to prune), never a traceback or
    more than one error line; the output passes the full checker, runs in
    onnxruntime with finite outputs of the same names and shapes as the
    original's; the input file is untouched; a rerun is byte-identical.
    """
    rng = np.random.default_rng(seed + 1_000_003)
    model = random_model(seed)
    src, dst = folder / f"m{seed}.onnx", folder / f"m{seed}.out.onnx"
    onnx.save(model, str(src))
    before = src.read_bytes()
    args = ["-q", src, dst, "--runs", "0", "--seed", str(seed), "--ratio", f"{rng.choice([0.25, 0.5, 0.75]):.2f}",
            "--criterion", str(rng.choice(["l1", "l2", "random", "bn-scale"] if _has_bn(model) else
                                          ["l1", "l2", "random"]))]
    code, out, err = run_cli(args)
    outcome = Outcome(seed, code, err.strip())
    problems = outcome.problems
    if "Traceback" in err or len(err.splitlines()) > 1:
        problems.append(f"stderr is not one line: {err!r}")
    if src.read_bytes() != before:
        problems.append("the input file changed")
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    if leftovers:
        problems.append(f"leftovers {leftovers}")
    if code not in (0, 3):
        problems.append(f"exit {code}: {err.strip()}")
    if code != 0:
        if dst.exists():
            problems.append("a failed run wrote its output")
        return outcome
    pruned = onnx.load(str(dst))
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except Exception as exc:  # noqa: BLE001 - any checker failure is a finding
        problems.append(f"checker: {exc}")
        return outcome
    feeds = {"input": np.random.default_rng(seed).standard_normal(
        [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)}
    want = _run(model, feeds)
    got = _run(pruned, feeds)
    if [n for n, _ in want] != [n for n, _ in got]:
        problems.append(f"output names {[n for n, _ in want]} -> {[n for n, _ in got]}")
    for (name, a), (_, b) in zip(want, got):
        if a.shape != b.shape:
            problems.append(f"output {name} shape {a.shape} -> {b.shape}")
        if not np.isfinite(b).all():
            problems.append(f"output {name} not finite")
    if rerun:
        again = folder / f"m{seed}.again.onnx"
        code2, _, err2 = run_cli([a if a != dst else again for a in args])
        if code2 != 0 or again.read_bytes() != dst.read_bytes():
            problems.append(f"rerun differs (exit {code2}, {err2.strip()!r})")
    return outcome


def _has_bn(model: onnx.ModelProto) -> bool:
    return any(n.op_type == "BatchNormalization" for n in model.graph.node)


def _run(model: onnx.ModelProto, feeds) -> list[tuple[str, np.ndarray]]:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return list(zip(names, session.run(None, feeds)))


def scratch_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="onnxprune-fuzz-", dir=os.environ.get("TMPDIR")))


MEMORY_LIMIT = "1G"


def check_corrupted(seed: int, run_cli, folder: Path) -> Outcome:
    """A random model with random damage (truncated, bytes flipped, a weight resized): never a traceback.

    Exit 0 is allowed when the damage was harmless (then the output must pass
    the checker); otherwise one line, exit 1 or 3, nothing written.
    """
    rng = np.random.default_rng(seed + 2_000_003)
    model = random_model(seed)
    how = rng.choice(["truncate", "flip", "resize"])
    if how == "resize" and len(model.graph.initializer):
        tensor = model.graph.initializer[int(rng.integers(len(model.graph.initializer)))]
        array = onnx.numpy_helper.to_array(tensor)
        grown = np.concatenate([array.reshape(-1), np.ones(1, array.dtype)])
        tensor.CopyFrom(onnx.numpy_helper.from_array(grown, tensor.name))
        data = model.SerializeToString()
    else:
        data = bytearray(model.SerializeToString())
        if how == "truncate":
            data = data[: int(rng.integers(1, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
    src, dst = folder / f"c{seed}.onnx", folder / f"c{seed}.out.onnx"
    src.write_bytes(bytes(data))
    # a flipped byte can make a Pad amount or a dim millions wide: the suite runs within 3 GB, as a
    # user on a small machine would (a run that needs more fails fast, in one line)
    code, out, err = run_cli(["-q", src, dst, "--runs", "0", "--memory-limit", MEMORY_LIMIT])
    outcome = Outcome(seed, code, err.strip())
    if "Traceback" in err or len(err.splitlines()) > 1:
        outcome.problems.append(f"{how}: stderr is not one line: {err!r}")
    if src.read_bytes() != bytes(data):
        outcome.problems.append(f"{how}: the input file changed")
    if code not in (0, 1, 3):
        outcome.problems.append(f"{how}: exit {code}: {err.strip()}")
    if code != 0 and dst.exists():
        outcome.problems.append(f"{how}: a failed run wrote its output")
    if code == 0:
        try:
            onnx.checker.check_model(onnx.load(str(dst)), full_check=True)
        except Exception as exc:  # noqa: BLE001
            outcome.problems.append(f"{how}: output fails the checker: {exc}")
    return outcome
