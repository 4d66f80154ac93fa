"""Output files besides the clips (moviedreamer/media.py writes those): the storyboard contact sheet and the
manifest.

Everything is written to a temporary name, synced and renamed when complete (its folder synced after), so a killed
run never leaves a file that looks finished but is not. The captions are drawn in a font that has the story's letters
(pipeline/fonts.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from moviedreamer.durable import publish_file, temporary_name, write_bytes_atomic
from moviedreamer.pipeline.fonts import storyboard_font

ELLIPSIS = "…"
CAPTION_LINES = 2  # lines of a tile's caption (scene.shot and action) before it is cut with an ellipsis


def write_storyboard(keyframes: list[np.ndarray], labels: list[str | tuple[str, str]], path: str | Path, columns: int = 6,
                     title: str = "") -> Path:
    """A contact sheet: one tile per shot with its caption (scene/shot number and action) under it, and its camera on
    the line below when the label is a (caption, camera) pair. A caption longer than two lines, or a camera longer than
    one, is cut at a word with an ellipsis (…)."""
    if not keyframes:
        raise ValueError("no keyframes for the storyboard")
    tile_w = max(160, keyframes[0].shape[1])
    scale = tile_w / keyframes[0].shape[1]
    tile_h = int(round(keyframes[0].shape[0] * scale))
    font = storyboard_font(" ".join([title] + [" ".join(label) if isinstance(label, tuple) else label for label in labels]))
    text_h, pad, header = 14 * (CAPTION_LINES + 1) + 6, 6, (24 if title else 0)
    columns = min(columns, len(keyframes))
    rows = (len(keyframes) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (tile_w + pad) + pad, header + rows * (tile_h + text_h + pad) + pad), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 6), title, fill=(255, 255, 255), font=font)
    for i, (frame, label) in enumerate(zip(keyframes, labels)):
        x = pad + (i % columns) * (tile_w + pad)
        y = header + pad + (i // columns) * (tile_h + text_h + pad)
        sheet.paste(Image.fromarray(frame).resize((tile_w, tile_h), Image.NEAREST), (x, y))
        caption, camera = tile_text(label, lambda t: draw.textlength(t, font=font), tile_w - 4)
        for j, line in enumerate(caption):
            draw.text((x + 2, y + tile_h + 3 + 14 * j), line, fill=(230, 230, 230), font=font)
        if camera:
            draw.text((x + 2, y + tile_h + 3 + 14 * CAPTION_LINES), camera, fill=(150, 200, 255), font=font)
    return _save_atomic(sheet, Path(path))


def tile_text(label: str | tuple[str, str], measure, width: float) -> tuple[list[str], str]:
    """What a storyboard tile says under its keyframe: the caption's lines (at most CAPTION_LINES) and the camera line
    ("" when the label has no camera), each no wider than `width` as `measure` reckons."""
    caption, camera = (label, "") if isinstance(label, str) else label
    return fit_lines(caption, measure, width, CAPTION_LINES), (fit_lines(f"camera: {camera}", measure, width, 1) or [""])[0] if camera else ""


def fit_lines(text: str, measure, width: float, max_lines: int) -> list[str]:
    """`text` wrapped at words into at most `max_lines` lines no wider than `width` (`measure(line)` → its width). What
    does not fit is cut at a word and the last line ends with an ellipsis; a single word wider than a line is cut inside
    it, with the ellipsis."""
    lines, current = [], ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if measure(candidate) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    lines += [current] if current else []
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _with_ellipsis(lines[-1], measure, width)
    return [line if measure(line) <= width else _with_ellipsis(line, measure, width) for line in lines]


def _with_ellipsis(line: str, measure, width: float) -> str:
    """The line, shortened by whole words (by characters when one word is left) until it fits with an ellipsis."""
    words = line.split()
    while len(words) > 1 and measure(" ".join(words) + ELLIPSIS) > width:
        words.pop()
    text = " ".join(words)
    while len(text) > 1 and measure(text + ELLIPSIS) > width:
        text = text[:-1]
    return text.rstrip(" ,;:.") + ELLIPSIS


def _save_atomic(image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        image.save(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return publish_file(tmp, path)


def write_json_atomic(data: dict, path: str | Path) -> Path:
    return write_bytes_atomic(path, json.dumps(data, indent=2).encode("utf-8"))


