"""scripts/bench_pipeline.py and its pieces (ocr_pipeline.py, ocr_pages.py) on tiny synthetic
inputs: DB post-processing, crops, the classifier's flips, CTC decoding, the page metric. No
download, no model: the full benchmark is a script."""
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def mods():
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield tuple(importlib.import_module(m) for m in ("ocr_pipeline", "ocr_pages", "bench_pipeline"))
    finally:
        sys.path.remove(str(SCRIPTS))


def rect(cx, cy, w, h, degrees=0.0):
    t = np.radians(degrees)
    u, v = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
    c = np.array([cx, cy])
    return np.array([c - w / 2 * u - h / 2 * v, c + w / 2 * u - h / 2 * v,
                     c + w / 2 * u + h / 2 * v, c - w / 2 * u + h / 2 * v])


def test_det_resize_follows_rapidocr(mods):
    ocr, _, _ = mods
    assert ocr.det_resize_shape(480, 640, 736) == (736, 992)  # short side to 736, then multiples of 32
    assert ocr.det_resize_shape(480, 640, 480) == (480, 640)
    assert ocr.det_resize_shape(1000, 800, 736) == (992, 800)
    x = ocr.det_preprocess(np.full((64, 96, 3), 255, np.uint8), 64)
    assert x.shape == (1, 3, 64, 96) and np.allclose(x, 1.0)


def test_min_area_rect_of_a_turned_rectangle(mods):
    ocr, _, _ = mods
    corners = rect(50, 40, 60, 10, degrees=20)
    inner = [a + s * (b - a) + r * (d - a) for s in np.linspace(0, 1, 13) for r in np.linspace(0, 1, 5)
             for a, b, d in [(corners[0], corners[1], corners[3])]]
    box, short = ocr.min_area_rect(np.array(inner))
    assert short == pytest.approx(10, abs=1e-4)
    sides = sorted(np.linalg.norm(box[i] - box[(i + 1) % 4]) for i in range(4))
    assert np.allclose(sides, [10, 10, 60, 60], atol=1e-4)


def test_unclip_grows_each_side_by_area_ratio_over_perimeter(mods):
    ocr, _, _ = mods
    box = rect(0, 0, 100, 20, degrees=30).astype(np.float32)
    out = ocr.unclip(box, 1.6)
    d = 100 * 20 * 1.6 / 240
    assert np.linalg.norm(out[1] - out[0]) == pytest.approx(100 + 2 * d, rel=1e-5)
    assert np.linalg.norm(out[3] - out[0]) == pytest.approx(20 + 2 * d, rel=1e-5)
    assert np.allclose(out.mean(0), 0, atol=1e-4)  # same centre
    assert np.allclose((out[1] - out[0]) / np.linalg.norm(out[1] - out[0]), (box[1] - box[0]) / 100, atol=1e-5)


def test_db_postprocess_finds_text_lines_and_drops_weak_or_thin_blobs(mods):
    ocr, _, _ = mods
    prob = np.zeros((120, 200), np.float32)
    prob[20:30, 10:110] = 0.9  # a line: 100 x 10 pixels
    prob[60:70, 50:150] = 0.35  # above thresh 0.3, below box_thresh 0.5 on average: dropped
    prob[100:102, 10:60] = 0.9  # 2 pixels high (3 after the dilation): under min_size, dropped
    boxes, scores = ocr.db_postprocess(prob, (240, 400))  # the page is twice the map
    # dilation makes it 101 x 11 pixels, its centres 100 x 10 apart: the box's polygon (edges
    # included, as cv2.fillPoly) holds the 100 x 10 line and a zero row and column
    assert len(boxes) == 1 and scores[0] == pytest.approx(0.9 * 1000 / 1111, rel=1e-5)
    # unclip adds d on every side
    d = 100 * 10 * 1.6 / 220
    expect = np.array([10 - d, 20 - d, 110 + d, 30 + d]) * 2
    got = np.array([boxes[0][:, 0].min(), boxes[0][:, 1].min(), boxes[0][:, 0].max(), boxes[0][:, 1].max()])
    assert np.allclose(got, expect, atol=3)
    assert np.allclose(boxes[0], ocr.order_points_clockwise(boxes[0]))


def test_db_postprocess_follows_a_turned_line(mods):
    ocr, _, _ = mods
    from PIL import Image, ImageDraw
    canvas = Image.new("L", (300, 200), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in rect(150, 100, 200, 20, degrees=10)], fill=230)
    boxes, _ = ocr.db_postprocess(np.asarray(canvas, np.float32) / 255, (200, 300))
    assert len(boxes) == 1
    top = boxes[0][1] - boxes[0][0]
    assert np.degrees(np.arctan2(top[1], top[0])) == pytest.approx(10, abs=1.5)


def test_crop_line_reads_an_upright_box_exactly_and_turns_tall_ones(mods):
    ocr, _, _ = mods
    rng = np.random.default_rng(0)
    page = rng.integers(0, 256, (50, 80, 3)).astype(np.uint8)
    box = np.array([[10, 5], [60, 5], [60, 25], [10, 25]], np.float32)
    assert np.array_equal(ocr.crop_line(page, box), page[5:25, 10:60])
    tall = np.array([[10, 5], [20, 5], [20, 45], [10, 45]], np.float32)
    assert ocr.crop_line(page, tall).shape == (10, 40, 3)


def test_classifier_flips_only_confident_180(mods):
    ocr, _, _ = mods
    crops = [np.full((20, 40 + 10 * i, 3), 10 * i, np.uint8) for i in range(8)]
    for c in crops:
        c[0, 0] = 255  # a marker that a flip moves to the far corner
    probs = {0: 0.1, 1: 0.95, 2: 0.85, 3: 0.99, 4: 0.5, 5: 0.91, 6: 0.0, 7: 0.96}

    def cls(x):  # identifies each crop by its (constant) value, -1 + 2 * 10 i / 255
        ids = np.rint((x[:, 0, 10, 5] + 1) / 2 * 255 / 10).astype(int)
        return np.array([[1 - probs[i], probs[i]] for i in ids], np.float32)

    out, flipped = ocr.classify(cls, crops)
    assert flipped == [probs[i] > 0.9 for i in range(8)]
    for i, crop in enumerate(out):
        assert (crop[-1, -1, 0] == 255) == flipped[i] and (crop[0, 0, 0] == 255) != flipped[i]


def test_recogniser_batch_width_and_padding(mods):
    ocr, _, _ = mods
    assert ocr.rec_width([np.zeros((24, 100, 3))]) == 320  # never under the configured width
    assert ocr.rec_width([np.zeros((24, 100, 3)), np.zeros((10, 200, 3))]) == 960
    x = ocr.resize_norm(np.full((24, 48, 3), 255, np.uint8), 48, 320)
    assert np.allclose(x[:, :, :96], 1.0) and np.allclose(x[:, :, 96:], 0.0)


def test_ctc_greedy_merges_repeats_drops_blanks_and_scores_kept(mods):
    ocr, _, _ = mods
    chars = ["<blank>", "a", "b", " "]
    path = [1, 1, 0, 1, 2, 2, 0, 0, 3, 2]
    scores = np.full((len(path), 4), 0.0, np.float32)
    for t, k in enumerate(path):
        scores[t, k] = 0.5 + 0.05 * t
    text, conf = ocr.ctc_greedy(scores, chars)
    assert text == "aab b"
    kept = [0, 3, 4, 8, 9]  # first of each run, blanks out
    assert conf == pytest.approx(np.mean([0.5 + 0.05 * t for t in kept]))
    assert ocr.ctc_greedy(np.eye(4)[[0, 0]], chars) == ("", 0.0)


def test_page_metric(mods):
    _, pages, bench = mods
    Line = pages.Line
    quad = lambda x0, y0, x1, y1: np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)  # noqa: E731
    lines = (Line("hello big world", quad(10, 10, 210, 30), False, 0.0, False),
             Line("文本识别", quad(10, 50, 110, 70), False, 0.0, True),
             Line("missed", quad(10, 90, 80, 110), False, 0.0, False),
             Line("upside", quad(150, 90, 250, 110)[[2, 3, 0, 1]], True, 0.0, False))
    boxes = np.stack([quad(110, 8, 212, 32), quad(8, 8, 108, 32),  # line 1 split in two, out of order
                      quad(8, 48, 112, 72),  # line 2, read with a space and one wrong character
                      quad(150, 90, 250, 110),  # line 4, read right
                      quad(300, 300, 320, 320)])  # nothing there: ignored
    texts = ["world", "hello big", "文本 识字", "upside", "noise"]
    s = bench.score_page(lines, boxes, texts)
    assert (s.lines, s.chars) == (4, 15 + 4 + 6 + 6)
    assert s.errors == 0 + 1 + 6 + 0  # the missed line counts whole
    assert s.exact == 2  # the split line joins in reading order; 'upside' exact
    assert s.found == 2  # lines 2 and 4: neither half of the split line has IoU > 0.5 with it
    summary = s.summary()
    assert summary["char_accuracy"] == pytest.approx(1 - 7 / 31)
    assert bench.Score(1, 1, 1, 0, 0).add(bench.Score(2, 0, 1, 1, 1)).summary()["line_exact"] == 0.5


def test_rendered_page_ink_lies_in_the_ground_truth(mods):
    _, pages, _ = mods
    page = pages.render_page(np.random.default_rng(3), ["<pillow default>"], [], size=(160, 240), p_noisy=0.0,
                             p_flip=0.5, p_tilt=0.5)
    assert page.lines and page.image.shape == (160, 240, 3)
    inside = np.zeros((160, 240), bool)
    for line in page.lines:
        x0, y0 = np.floor(line.quad.min(0)).astype(int) - 1
        x1, y1 = np.ceil(line.quad.max(0)).astype(int) + 1
        inside[max(y0, 0):y1, max(x0, 0):x1] = True
    dark = page.image.min(axis=2) < 150
    assert dark[inside].sum() > 0 and dark[~inside].sum() == 0


def test_prune_command_settings(mods):
    _, _, bench = mods
    default = bench.prune_command("a.onnx", "b.onnx", 0.5, "default", "c.npz", (1, 3, 48, 320), "r.json")
    assert "--calib" not in default and "--recover" not in default and "x:1x3x48x320" in default
    recommended = bench.prune_command("a.onnx", "b.onnx", 0.3, "recommended", "c.npz", (1, 3, 48, 320), "r.json")
    assert recommended[recommended.index("--calib") + 1] == "c.npz" and "--recover" in recommended
    assert recommended[recommended.index("--target-macs") + 1] == "0.3"


def test_table_has_a_row_per_pruned_set_and_the_recovery_times(mods):
    _, _, bench = mods
    res = lambda a: {"char_accuracy": a, "line_exact": a, "det_recall": 1.0}  # noqa: E731
    info = lambda s: {"wall_s": 10.0, "recovery_s": s, "macs_ratio": 0.5}  # noqa: E731
    runs = [{"target": None, "setting": "-", "pruned": "none", "result": res(0.99)}]
    for setting, rec in (("default", None), ("recommended", 7.0)):
        for key, acc in (("det", 0.98), ("cls", 0.97), ("rec", 0.9), ("all", 0.8)):
            runs.append({"target": 0.5, "setting": setting, "pruned": key, "result": res(acc),
                         "prune": {s: info(rec) for s in bench.STAGES if key in (s, "all")}})
    text = bench.table({"runs": runs})
    rows = text.splitlines()
    assert rows[0] == "| pruned | MACs x0.5 default | MACs x0.5 recommended |"
    assert rows[2].startswith("| none | 0.990") and rows[6].startswith("| all three | 0.800")
    assert "rec MACs x0.500, prune 10s (recovery 7s)" in text
