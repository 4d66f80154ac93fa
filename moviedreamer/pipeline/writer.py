"""Output files besides the clips (moviedreamer/media.py writes those): the storyboard contact sheet and the
manifest.

Everything is written to a temporary name and renamed when complete, so a killed run never leaves a file
that looks finished but is not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def write_storyboard(keyframes: list[np.ndarray], labels: list[str], path: str | Path, columns: int = 6, title: str = "") -> Path:
    """A contact sheet: one tile per shot with its scene/shot number and action text under it."""
    if not keyframes:
        raise ValueError("no keyframes for the storyboard")
    tile_w = max(160, keyframes[0].shape[1])
    scale = tile_w / keyframes[0].shape[1]
    tile_h = int(round(keyframes[0].shape[0] * scale))
    font = ImageFont.load_default()
    text_h, pad, header = 34, 6, (24 if title else 0)
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
        for j, line in enumerate(_wrap(label, draw, font, tile_w)[:2]):
            draw.text((x + 2, y + tile_h + 3 + 14 * j), line, fill=(230, 230, 230), font=font)
    return _save_atomic(sheet, Path(path))


def _wrap(text: str, draw, font, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if draw.textlength(candidate, font=font) <= width - 4 or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    return lines + ([current] if current else [])


def _save_atomic(image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    image.save(tmp)
    os.replace(tmp, path)
    return path


def write_json_atomic(data: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


