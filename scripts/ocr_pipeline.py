"""rapidocr's three-stage OCR pipeline (DB text detector, text-line direction classifier, CTC
recogniser) re-implemented in numpy, scipy and Pillow, for benchmarks that swap pruned models in.

rapidocr itself needs opencv, pyclipper and shapely; this follows its code (rapidocr 3.10.0,
``ch_ppocr_det/utils.py``, ``ch_ppocr_cls/main.py``, ``ch_ppocr_rec/main.py``, ``main.py``) step by
step with the same defaults, and differs only where the libraries do:

* contours: cv2.findContours is replaced by 8-connected components (scipy.ndimage.label); the
  minimum-area rectangle of a component's pixels is the one of its outer contour (both are the
  rectangle of the convex hull);
* unclip: every box that reaches it is a rectangle (get_mini_boxes), and pyclipper's round offset
  of a rectangle by d has a minimum-area rectangle of the same orientation, d larger on each side:
  computed so;
* resizing and the perspective crop use Pillow (bilinear; bicubic quad transform), whose
  down-sampling filters more widely than cv2's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage, spatial

# rapidocr 3.10.0 config.yaml defaults
DET_LIMIT_SIDE_LEN, DET_LIMIT_TYPE = 736, "min"
DET_THRESH, BOX_THRESH, MAX_CANDIDATES, UNCLIP_RATIO, MIN_SIZE = 0.3, 0.5, 1000, 1.6, 3
CLS_SHAPE, CLS_BATCH, CLS_THRESH = (3, 48, 192), 6, 0.9
REC_SHAPE, REC_BATCH, TEXT_SCORE = (3, 48, 320), 6, 0.5


# ------------------------------------------------------------------ detector pre-processing

def det_resize_shape(h: int, w: int, limit_side_len: int = DET_LIMIT_SIDE_LEN,
                     limit_type: str = DET_LIMIT_TYPE) -> tuple[int, int]:
    """DetPreProcess.resize: scale so the short (limit 'min') or long ('max') side meets the limit,
    then round both sides to multiples of 32."""
    ratio = 1.0
    if limit_type == "max":
        if max(h, w) > limit_side_len:
            ratio = limit_side_len / (h if h > w else w)
    elif min(h, w) < limit_side_len:
        ratio = limit_side_len / (h if h < w else w)
    return int(round(int(h * ratio) / 32) * 32), int(round(int(w * ratio) / 32) * 32)


def det_preprocess(rgb: np.ndarray, limit_side_len: int = DET_LIMIT_SIDE_LEN) -> np.ndarray:
    """Page (H, W, 3 RGB uint8) -> [1, 3, H', W'] float32: BGR as cv2 loads it, (x/255 - 0.5)/0.5."""
    h, w = rgb.shape[:2]
    rh, rw = det_resize_shape(h, w, limit_side_len)
    img = rgb if (rh, rw) == (h, w) else np.asarray(Image.fromarray(rgb).resize((rw, rh), Image.BILINEAR))
    bgr = img[:, :, ::-1].astype(np.float32)
    return ((bgr / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)


# ------------------------------------------------------------------ DB post-processing

def dilate_2x2(mask: np.ndarray) -> np.ndarray:
    """cv2.dilate with a 2x2 kernel (anchor at its centre, (1, 1)): out[y, x] = max of in[y-1:y+1, x-1:x+1]."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:, 1:] |= mask[:, :-1]
    out[1:, 1:] |= mask[:-1, :-1]
    return out


def min_area_rect(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The minimum-area rectangle around points [N, 2] (x, y): its 4 corners and its short side."""
    pts = np.unique(np.asarray(points, np.float64), axis=0)
    if len(pts) >= 3:
        try:
            pts = pts[spatial.ConvexHull(pts).vertices]
        except spatial.QhullError:  # collinear: the extremes are the hull
            pass
    if len(pts) == 1:
        return np.repeat(pts, 4, axis=0).astype(np.float32), 0.0
    best = None
    for i in range(len(pts)):
        edge = pts[(i + 1) % len(pts)] - pts[i]
        norm = np.hypot(*edge)
        if norm == 0:
            continue
        u = edge / norm
        v = np.array([-u[1], u[0]])
        a, b = pts @ u, pts @ v
        area = (a.max() - a.min()) * (b.max() - b.min())
        if best is None or area < best[0]:
            best = (area, u, v, a.min(), a.max(), b.min(), b.max())
    _, u, v, a0, a1, b0, b1 = best
    corners = np.array([a0 * u + b0 * v, a1 * u + b0 * v, a1 * u + b1 * v, a0 * u + b1 * v], np.float32)
    return corners, float(min(a1 - a0, b1 - b0))


def get_mini_boxes(points: np.ndarray) -> tuple[np.ndarray, float]:
    """DBPostProcess.get_mini_boxes: the min-area rectangle, corners ordered tl, tr, br, bl (rapidocr's way)."""
    rect, short = min_area_rect(points)
    pts = sorted(list(rect), key=lambda p: p[0])
    i1, i4 = (0, 1) if pts[1][1] > pts[0][1] else (1, 0)
    i2, i3 = (2, 3) if pts[3][1] > pts[2][1] else (3, 2)
    return np.array([pts[i1], pts[i2], pts[i3], pts[i4]], np.float32), short


def box_score_fast(pred: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside the box's polygon (within its clipped bounding rectangle)."""
    h, w = pred.shape
    xmin = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = Image.new("L", (xmax - xmin + 1, ymax - ymin + 1), 0)
    poly = [(float(int(x - xmin)), float(int(y - ymin))) for x, y in box]  # cv2.fillPoly's int points
    ImageDraw.Draw(mask).polygon(poly, fill=1)
    m = np.asarray(mask, bool)
    region = pred[ymin:ymax + 1, xmin:xmax + 1]
    return float(region[m].mean()) if m.any() else 0.0


def unclip(box: np.ndarray, ratio: float = UNCLIP_RATIO) -> np.ndarray:
    """Grow a rectangle (tl, tr, br, bl) by d = area * ratio / perimeter on every side (see module doc)."""
    w = float(np.linalg.norm(box[1] - box[0]))
    h = float(np.linalg.norm(box[3] - box[0]))
    if w == 0 or h == 0:
        return box.copy()
    d = w * h * ratio / (2 * (w + h))
    u = (box[1] - box[0]) / w
    v = (box[3] - box[0]) / h
    return np.array([box[0] - d * u - d * v, box[1] + d * u - d * v,
                     box[2] + d * u + d * v, box[3] - d * u + d * v], np.float32)


def order_points_clockwise(pts: np.ndarray) -> np.ndarray:
    x_sorted = pts[np.argsort(pts[:, 0], kind="stable")]
    left, right = x_sorted[:2], x_sorted[2:]
    tl, bl = left[np.argsort(left[:, 1], kind="stable")]
    tr, br = right[np.argsort(right[:, 1], kind="stable")]
    return np.array([tl, tr, br, bl], np.float32)


def db_postprocess(prob: np.ndarray, src_hw: tuple[int, int], thresh: float = DET_THRESH,
                   box_thresh: float = BOX_THRESH, unclip_ratio: float = UNCLIP_RATIO,
                   max_candidates: int = MAX_CANDIDATES) -> tuple[np.ndarray, list[float]]:
    """DBPostProcess: probability map [H, W] -> boxes [K, 4, 2] (page pixels, tl tr br bl) and scores."""
    height, width = prob.shape
    src_h, src_w = src_hw
    mask = dilate_2x2(prob > thresh)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), int))
    boxes, scores = [], []
    for index, region in enumerate(ndimage.find_objects(labels)[:max_candidates], 1):
        ys, xs = np.nonzero(labels[region] == index)
        ys, xs = ys + region[0].start, xs + region[1].start
        points, short = get_mini_boxes(np.stack([xs, ys], 1))
        if short < MIN_SIZE:
            continue
        score = box_score_fast(prob, points)
        if box_thresh > score:
            continue
        box, short = get_mini_boxes(unclip(points, unclip_ratio))
        if short < MIN_SIZE + 2:
            continue
        box[:, 0] = np.clip(np.round(box[:, 0] / width * src_w), 0, src_w)
        box[:, 1] = np.clip(np.round(box[:, 1] / height * src_h), 0, src_h)
        boxes.append(box.astype(np.int32))
        scores.append(score)
    kept, kept_scores = [], []
    for box, score in zip(boxes, scores):  # filter_det_res
        box = order_points_clockwise(box.astype(np.float32))
        box[:, 0] = np.clip(box[:, 0], 0, src_w - 1).astype(int)
        box[:, 1] = np.clip(box[:, 1], 0, src_h - 1).astype(int)
        if int(np.linalg.norm(box[0] - box[1])) <= 3 or int(np.linalg.norm(box[0] - box[3])) <= 3:
            continue
        kept.append(box)
        kept_scores.append(score)
    return np.array(kept, np.float32).reshape(-1, 4, 2), kept_scores


def sorted_boxes(boxes: np.ndarray, y_threshold: float = 10) -> np.ndarray:
    """TextDetector.sorted_boxes: top to bottom, left to right within a line."""
    if len(boxes) == 0:
        return boxes
    order = np.argsort(boxes[:, 0, 1], kind="stable")
    by_y = boxes[order]
    line = np.concatenate([[0], np.cumsum(np.diff(by_y[:, 0, 1]) >= y_threshold)])
    return by_y[np.lexsort((by_y[:, 0, 0], line))]


def crop_line(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """get_rotate_crop_image: warp the quad to an upright rectangle; tall results are turned 90 degrees."""
    w = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    h = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    w, h = max(w, 1), max(h, 1)
    tl, tr, br, bl = box
    quad = tuple(float(c) for p in (tl, bl, br, tr) for c in p)
    out = np.asarray(Image.fromarray(rgb).transform((w, h), Image.QUAD, quad, Image.BICUBIC))
    if out.shape[0] / out.shape[1] >= 1.5:
        out = np.rot90(out)
    return np.ascontiguousarray(out)


# ------------------------------------------------------------------ classifier and recogniser inputs

def resize_norm(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """Keep the aspect at the given height, at most ``width`` wide; BGR (x/255 - 0.5)/0.5, zero-padded right."""
    h, w = crop.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / float(h))))
    img = np.asarray(Image.fromarray(crop).resize((resized_w, height), Image.BILINEAR), np.float32)
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :resized_w] = (img[:, :, ::-1].transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return out


def rec_width(crops: Sequence[np.ndarray], shape: tuple[int, int, int] = REC_SHAPE) -> int:
    """The recogniser's batch width: the widest aspect in the batch, never under the configured width."""
    _, h, w = shape
    ratio = max([w / h] + [c.shape[1] / c.shape[0] for c in crops])
    return int(h * ratio)


def ctc_greedy(scores: np.ndarray, characters: Sequence[str]) -> tuple[str, float]:
    """CTCLabelDecode: arg-max per position, repeats merged, blanks (index 0) dropped; the score is
    the mean probability of the kept positions (0 when none)."""
    best = scores.argmax(axis=-1)
    prob = scores.max(axis=-1)
    keep = np.ones(len(best), bool)
    keep[1:] = best[1:] != best[:-1]
    keep &= best != 0
    text = "".join(characters[i] for i in best[keep])
    return text, float(prob[keep].mean()) if keep.any() else 0.0


# ------------------------------------------------------------------ the pipeline

@dataclass
class PageResult:
    boxes: np.ndarray  # [K, 4, 2] detected lines, page pixels
    texts: list[str] = field(default_factory=list)  # one per box ('' when filtered by text score)
    flipped: list[bool] = field(default_factory=list)


class Stage:
    """One onnxruntime session on one thread (a fixed, fair setting on a shared machine)."""

    def __init__(self, model: str | bytes):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]


def detect(det: Stage, rgb: np.ndarray, limit_side_len: int = DET_LIMIT_SIDE_LEN) -> np.ndarray:
    prob = det(det_preprocess(rgb, limit_side_len))[0, 0]
    boxes, _ = db_postprocess(prob, rgb.shape[:2])
    return sorted_boxes(boxes)


def classify(cls: Stage, crops: list[np.ndarray]) -> tuple[list[np.ndarray], list[bool]]:
    """TextClassifier: batches of 6 in aspect order; a crop is turned 180 degrees when the
    classifier says '180' with probability above 0.9."""
    crops = list(crops)
    flipped = [False] * len(crops)
    order = np.argsort([c.shape[1] / c.shape[0] for c in crops], kind="stable")
    for start in range(0, len(crops), CLS_BATCH):
        idx = order[start:start + CLS_BATCH]
        probs = cls(np.stack([resize_norm(crops[i], CLS_SHAPE[1], CLS_SHAPE[2]) for i in idx]))
        for i, p in zip(idx, probs):
            if p.argmax() == 1 and p[1] > CLS_THRESH:
                crops[i] = np.ascontiguousarray(crops[i][::-1, ::-1])
                flipped[i] = True
    return crops, flipped


def recognise(rec: Stage, crops: list[np.ndarray], characters: Sequence[str]) -> list[tuple[str, float]]:
    """TextRecognizer: batches of 6 in aspect order, each as wide as its widest crop; greedy CTC."""
    out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
    order = np.argsort([c.shape[1] / c.shape[0] for c in crops], kind="stable")
    for start in range(0, len(crops), REC_BATCH):
        idx = order[start:start + REC_BATCH]
        width = rec_width([crops[i] for i in idx])
        scores = rec(np.stack([resize_norm(crops[i], REC_SHAPE[1], width) for i in idx]))
        for i, s in zip(idx, scores):
            out[i] = ctc_greedy(s, characters)
    return out


def characters_of(rec: Stage) -> list[str]:
    """The recogniser's alphabet from its metadata: blank first, the dictionary, then space."""
    return ["<blank>"] + rec.session.get_modelmeta().custom_metadata_map["character"].split("\n") + [" "]
