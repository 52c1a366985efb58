"""The trained digits CNN (models/digits/) for accuracy tests: model, data, and task accuracy.

>>> from support import digits
>>> model = digits.model()                       # onnx.ModelProto, BatchNorm nodes kept
>>> calib = digits.calib()                       # {"input": float32 [256, 1, 8, 8]}: for --calib
>>> x, y = digits.heldout()                      # float32 [540, 1, 8, 8], int64 [540]
>>> digits.accuracy(pruned_model)                # held-out top-1 accuracy of any model with the same I/O
>>> digits.RECORDED_ACCURACY                     # what the unpruned model scored at export (digits.json)

Regenerate with scripts/train_digits.py (torch, scikit-learn); see models/README.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

FOLDER = Path(__file__).resolve().parents[2] / "models" / "digits"
MODEL_PATH = FOLDER / "digits_cnn.onnx"
CALIB_PATH = FOLDER / "calib.npz"
HELDOUT_PATH = FOLDER / "heldout.npz"
LABELS_PATH = FOLDER / "labels.npz"
META = json.loads((FOLDER / "digits.json").read_text())
INPUT = META["input"]
RECORDED_ACCURACY: float = META["heldout"]["accuracy"]


def model() -> onnx.ModelProto:
    return onnx.load(str(MODEL_PATH))


def calib() -> dict[str, np.ndarray]:
    """Calibration inputs, one array per model input (first axis = samples)."""
    with np.load(CALIB_PATH) as data:
        return {name: data[name] for name in data.files}


def calib_labels() -> np.ndarray:
    with np.load(LABELS_PATH) as data:
        return data["calib"]


def heldout() -> tuple[np.ndarray, np.ndarray]:
    """Held-out inputs and labels: never seen in training or calibration."""
    with np.load(HELDOUT_PATH) as data, np.load(LABELS_PATH) as labels:
        return data[INPUT], labels["heldout"]


def predict(model_proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT: x})[0].argmax(axis=1)


def accuracy(model_proto: onnx.ModelProto, x: np.ndarray | None = None, y: np.ndarray | None = None) -> float:
    """Top-1 accuracy on (x, y); on the held-out split by default."""
    if x is None or y is None:
        x, y = heldout()
    return float((predict(model_proto, x) == y).mean())
