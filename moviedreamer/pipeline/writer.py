"""Output files: per-shot H.264 clips written as frames arrive, the movie assembled by remuxing them
(no second encode, no quality loss), the storyboard contact sheet and the manifest.

Everything is written to a temporary name and renamed when complete, so a killed run never leaves a file
that looks finished but is not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

CRF = "18"  # visually lossless for the toy world's flat colours; shots are encoded once only
PRESET = "veryfast"


class ClipWriter:
    """Stream uint8 RGB frames [H, W, 3] into an H.264 mp4; the file appears under its name only on close()."""

    def __init__(self, path: str | Path, fps: int, width: int, height: int):
        import av

        if av.logging.get_level() is None:  # unset: FFmpeg prints libx264's statistics to stderr on every close
            av.logging.set_level(av.logging.ERROR)
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.stem + ".partial.mp4")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.tmp), "w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        # no B-frames: decode order = display order, so shots can be joined by remuxing packets
        self.stream.options = {"crf": CRF, "preset": PRESET, "bf": "0"}
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] frame, got {frame.dtype} {tuple(frame.shape)}")
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        _fsync(self.tmp)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.container.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def concat_clips(clips: list[Path], out_path: str | Path) -> int:
    """Join per-shot mp4s (same codec settings) into one movie by remuxing packets; returns the frame count."""
    import av

    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.stem + ".partial.mp4")
    frames, offset = 0, 0
    with av.open(str(tmp), "w") as out:
        out_stream = None
        for clip in clips:
            with av.open(str(clip)) as inp:
                in_stream = inp.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(in_stream)
                end = offset
                for packet in inp.demux(in_stream):
                    if packet.dts is None:  # the demuxer's final flush packet
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = out_stream
                    end = max(end, packet.pts + packet.duration, packet.dts + 1)
                    out.mux(packet)
                    frames += 1
                offset = end
    _fsync(tmp)
    os.replace(tmp, out_path)
    return frames


def read_frames(path: str | Path):
    """Yield the frames of a video as uint8 [H, W, 3] (for tests, eval and the judge)."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            yield frame.to_ndarray(format="rgb24")


def write_storyboard(keyframes: list[np.ndarray], labels: list[str], path: str | Path, columns: int = 6, title: str = "") -> Path:
    """A contact sheet: one tile per shot with its scene/shot number and action text under it."""
    from PIL import Image, ImageDraw, ImageFont

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


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
