"""Caption sidecars: what was said or written about each moment of a video, turned into shot descriptors.

Next to `CAPTIONS/NAME.{srt,json,yaml,yml}` for a video `NAME.mp4`:
- SRT: the usual numbered cues (`00:00:01,000 --> 00:00:04,500` then text lines);
- JSON / YAML: a list of cues, or `{title: ..., setting: ..., cues: [...]}`, each cue
  `{start: seconds, end: seconds, text: ..., camera: optional, setting: optional}`.
A shot's action is the text of the cues that overlap it, camera and setting come from the cue that overlaps it
most (or the file's defaults).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from moviedreamer.errors import UserError
from moviedreamer.script.yaml_positions import load_located

SUFFIXES = (".srt", ".json", ".yaml", ".yml")
NO_CAPTION = "an uncaptioned shot"
_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str
    camera: str | None = None
    setting: str | None = None


@dataclass
class Captions:
    cues: list[Cue]
    title: str | None = None
    setting: str | None = None

    def for_shot(self, start: float, end: float) -> dict:
        """{"action", "camera", "setting"} for the time span [start, end) in seconds."""
        overlapping = [(min(end, c.end) - max(start, c.start), c) for c in self.cues if min(end, c.end) > max(start, c.start)]
        texts = list(dict.fromkeys(c.text for _, c in overlapping if c.text))
        best = max(overlapping, key=lambda oc: oc[0])[1] if overlapping else None
        return {
            "action": " ".join(texts) or NO_CAPTION,
            "camera": (best and best.camera) or "camera unknown",
            "setting": (best and best.setting) or self.setting or "an unknown place",
        }


def find_sidecar(captions_dir: Path | None, video: Path) -> Path | None:
    if captions_dir is None:
        return None
    for suffix in SUFFIXES:
        candidate = captions_dir / (video.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_captions(path: Path | None) -> Captions:
    """Parse a sidecar (None → no captions). Malformed files raise UserError naming the file and the place."""
    if path is None:
        return Captions([])
    text = path.read_text(encoding="utf-8", errors="strict") if path.stat().st_size < 16 << 20 else _too_big(path)
    if path.suffix == ".srt":
        return Captions(_parse_srt(text, path))
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}:{e.colno}: expected JSON captions, found invalid JSON ({e.msg})") from None
    else:
        data = load_located(path).data  # the same hardened safe loader as story scripts
    return _from_data(data, path)


def _parse_srt(text: str, path: Path) -> list[Cue]:
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        timing = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if timing is None:
            line_no = text[: text.find(block)].count("\n") + 1
            raise UserError(f"{path}:{line_no}:1: expected an SRT cue with a 'HH:MM:SS,mmm --> HH:MM:SS,mmm' line, found {lines[0][:60]!r}")
        a, _, b = lines[timing].partition("-->")
        start, end = _srt_time(a, path, lines[timing]), _srt_time(b, path, lines[timing])
        cues.append(Cue(start, max(start, end), " ".join(ln.strip() for ln in lines[timing + 1 :])))
    return cues


def _srt_time(s: str, path: Path, line: str) -> float:
    m = _TIME.search(s)
    if not m:
        raise UserError(f"{path}: expected a time like 00:01:02,500 in {line.strip()!r}")
    h, mi, se, ms = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(se) + int(ms.ljust(3, "0")) / 1000


def _from_data(data, path: Path) -> Captions:
    title = setting = None
    if isinstance(data, dict):
        title, setting, data = data.get("title"), data.get("setting"), data.get("cues")
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of cues (or a mapping with 'cues:'), found {type(data).__name__}")
    cues = []
    for i, c in enumerate(data):
        if not isinstance(c, dict) or not {"start", "end", "text"} <= c.keys():
            raise UserError(f"{path}: cues[{i}]: expected {{start, end, text[, camera, setting]}}, found {str(c)[:80]!r}")
        try:
            start, end = float(c["start"]), float(c["end"])
        except (TypeError, ValueError):
            raise UserError(f"{path}: cues[{i}]: expected start and end in seconds, found {c['start']!r} and {c['end']!r}") from None
        if not 0 <= start <= end:
            raise UserError(f"{path}: cues[{i}]: expected 0 <= start <= end, found start {start} and end {end}")
        cues.append(Cue(start, end, str(c["text"]).strip(), c.get("camera"), c.get("setting")))
    return Captions(cues, title, setting)


def _too_big(path: Path):
    raise UserError(f"{path}: expected a caption file under 16 MiB, found {path.stat().st_size / 2**20:.0f} MiB")
