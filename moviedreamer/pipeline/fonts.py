"""The storyboard's font: a TrueType font that has a glyph for every letter of the story's captions.

Pillow's built-in bitmap font draws ASCII only (any other letter becomes a box). The candidates, in order: DejaVu Sans
as shipped inside installed Python packages (opencv-python's Qt fonts, matplotlib's), then the system's DejaVu, Noto
and Liberation fonts; the first that covers every letter of the text is used, else the one that covers the most. With
none at all, Pillow's own scalable font (Latin letters) or, failing that, its bitmap font.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

SIZE = 11  # px: two caption lines and the camera line fit the 14 px line pitch of a tile
PACKAGE_FONTS = (("cv2", "qt/fonts/DejaVuSans.ttf"), ("matplotlib", "mpl-data/fonts/ttf/DejaVuSans.ttf"))
SYSTEM_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
NOT_A_CHARACTER = "\U0010fffe"  # never has a glyph: what the font draws for a missing letter


def candidates() -> list[Path]:
    """Font files present on this machine, in order of preference (no package is imported to find them)."""
    found = []
    for package, rel in PACKAGE_FONTS:
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            found += [Path(loc) / rel for loc in spec.submodule_search_locations]
    found += [Path(p) for p in SYSTEM_FONTS]
    return [p for p in found if p.is_file()]


def storyboard_font(text: str = "", size: int = SIZE):
    """A font that draws every letter of `text` (the captions of a storyboard page)."""
    letters = "".join(sorted({ch for ch in text if not ch.isspace() and ord(ch) > 126}))
    best, best_missing = None, None
    for path in candidates():
        font = _load(str(path), size)
        if font is None:
            continue
        missing = sum(not has_glyph(font, ch) for ch in letters)
        if missing == 0:
            return font
        if best_missing is None or missing < best_missing:
            best, best_missing = font, missing
    if best is not None:
        return best
    try:
        return ImageFont.load_default(size=size)  # Pillow's scalable default (FreeType builds)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def has_glyph(font, ch: str) -> bool:
    """Whether `font` has its own glyph for `ch` (not the box it draws for a letter it lacks)."""
    return _mask(font, ch) != _mask(font, NOT_A_CHARACTER)


@lru_cache(maxsize=16)
def _load(path: str, size: int):
    try:
        return ImageFont.truetype(path, size)
    except (OSError, ValueError):
        return None


def _mask(font, ch: str):
    mask = font.getmask(ch)
    return mask.size, bytes(mask)
