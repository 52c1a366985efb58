"""Rendered document pages with Latin and Chinese text lines and their ground truth, for an
end-to-end OCR benchmark (scripts/bench_pipeline.py).

Each page is a light sheet with several lines of dark text, one language per line; some lines are
upside down (the direction classifier's job), some turned a few degrees (the detector's boxes and
the rectified crops), some pages noisy and slightly blurred. The ground truth of a line is its text
and the quad its ink occupies. Seeded: the same fonts and Pillow give the same pages.

Chinese needs a CJK font: ``find_cjk_fonts`` looks in the usual font folders for the
distribution's packages (fonts-wqy-microhei, fonts-wqy-zenhei, fonts-arphic-uming,
fonts-noto-cjk, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

import render_text

# Common words of modern written Chinese (documents, offices, news); all in GB2312.
CHINESE_WORDS = """
文本 识别 模型 网络 图像 文档 页面 数据 系统 方法 结果 报告 表格 地址 城市 街道 价格 订单 账户 付款 日期 名称
发票 金额 办公室 信息 技术 公司 管理 工作 时间 问题 国家 经济 社会 发展 研究 教育 学生 老师 学校 医院 银行
市场 服务 产品 质量 安全 环境 能源 交通 电话 邮件 会议 计划 项目 合同 客户 部门 经理 人员 设计 工程 建设
中国 北京 上海 广州 深圳 天津 南京 杭州 武汉 成都 西安 重庆 今天 明天 昨天 上午 下午 晚上 年度 季度 月份
第一 第二 第三 总计 合计 单位 数量 编号 备注 说明 注意 重要 通知 申请 审批 确认 完成 开始 结束 提交 修改
我们 他们 这个 那个 可以 没有 需要 已经 因为 所以 但是 如果 或者 以及 进行 通过 根据 关于 对于 由于 之后
人民 政府 法律 文化 历史 科学 自然 世界 生活 健康 家庭 朋友 孩子 父母 城乡 农业 工业 商业 旅游 体育 音乐
""".split()

LATIN_WORDS = render_text.WORDS
CJK_FONT_NAMES = ("wqy-microhei.ttc", "wqy-zenhei.ttc", "uming.ttc", "ukai.ttc", "NotoSansCJK-Regular.ttc",
                  "NotoSerifCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf", "DroidSansFallbackFull.ttf",
                  "SourceHanSansSC-Regular.otf")


def find_cjk_fonts() -> list[str]:
    """CJK-capable fonts installed on this machine (from a fixed list of the common packages' files)."""
    found = {}
    for folder in render_text.FONT_DIRS:
        if Path(folder).is_dir():
            for path in sorted(Path(folder).rglob("*")):
                if path.name in CJK_FONT_NAMES and path.name not in found:
                    found[path.name] = str(path)
    return [found[name] for name in CJK_FONT_NAMES if name in found]


@dataclass(frozen=True)
class Line:
    text: str
    quad: np.ndarray  # [4, 2] float: tl, tr, br, bl of the ink as read (page pixels)
    flipped: bool  # drawn upside down
    angle: float  # degrees, counter-clockwise
    chinese: bool


@dataclass(frozen=True)
class Page:
    image: np.ndarray  # [H, W, 3] uint8 RGB
    lines: tuple[Line, ...]
    noisy: bool


def _text(rng: np.random.Generator, chinese: bool) -> str:
    if chinese:
        return "".join(rng.choice(CHINESE_WORDS, int(rng.integers(2, 7))))
    return " ".join(rng.choice(LATIN_WORDS, int(rng.integers(2, 6))))


def _line_image(text: str, font: ImageFont.FreeTypeFont, ink: tuple[int, ...]) -> Image.Image:
    """The text's ink box, drawn on a transparent tile exactly that size."""
    left, top, right, bottom = font.getbbox(text)
    tile = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((-left, -top), text, fill=ink + (255,), font=font)
    return tile


def render_page(rng: np.random.Generator, latin_fonts: list[str], cjk_fonts: list[str],
                size: tuple[int, int] = (480, 640), p_chinese: float = 0.5, p_flip: float = 0.25,
                p_tilt: float = 0.2, max_tilt: float = 4.0, p_noisy: float = 0.3) -> Page:
    """One page (height, width ``size``) and its lines' ground truth."""
    height, width = size
    paper = int(rng.integers(220, 256))
    page = Image.new("RGB", (width, height), (paper, paper, int(rng.integers(205, paper + 1))))
    ink = tuple(int(v) for v in rng.integers(0, 80, 3))
    lines = []
    y = int(rng.integers(12, 40))
    while True:
        chinese = bool(cjk_fonts) and rng.random() < p_chinese
        fonts = cjk_fonts if chinese else latin_fonts
        font = render_text._font(fonts[rng.integers(len(fonts))], int(rng.integers(18, 31)))
        text = _text(rng, chinese)
        tile = _line_image(text, font, ink)
        while tile.width > width - 40 and len(text) > 2:  # too wide for the page: shorten
            text = text[:-1].rstrip()
            tile = _line_image(text, font, ink)
        flipped = bool(rng.random() < p_flip)
        angle = float(rng.uniform(-max_tilt, max_tilt)) if rng.random() < p_tilt else 0.0
        w, h = tile.size
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)  # as read: tl, tr, br, bl
        if flipped:
            tile = tile.rotate(180)
            corners = np.array([w, h]) - corners
        if angle:
            tile = tile.rotate(angle, resample=Image.BICUBIC, expand=True)
            t = np.radians(angle)  # PIL turns counter-clockwise about the centre, y pointing down
            rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
            corners = (corners - [w / 2, h / 2]) @ rot.T + [tile.width / 2, tile.height / 2]
        if y + tile.height > height - 10:
            break
        x = int(rng.integers(10, max(11, width - tile.width - 10)))
        page.paste(tile, (x, y), tile)
        lines.append(Line(text, (corners + [x, y]).astype(np.float32), flipped, angle, chinese))
        y += tile.height + int(rng.integers(8, 28))
    noisy = bool(rng.random() < p_noisy)
    if noisy:
        page = page.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.9))))
        noise = rng.normal(0, float(rng.uniform(6, 16)), (height, width, 1))
        image = np.clip(np.asarray(page, np.float64) + noise, 0, 255).astype(np.uint8)
    else:
        image = np.asarray(page, np.uint8).copy()
    return Page(image, tuple(lines), noisy)


def render_pages(n: int, seed: int, latin_fonts: list[str], cjk_fonts: list[str], **kw) -> list[Page]:
    rng = np.random.default_rng(seed)
    return [render_page(rng, latin_fonts, cjk_fonts, **kw) for _ in range(n)]
