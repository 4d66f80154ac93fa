"""Reading videos with PyAV: probing, shot-boundary detection (PySceneDetect) and streaming frame grabs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moviedreamer.errors import UserError, first_line

ADAPTIVE_THRESHOLD, MIN_CONTENT = 2.0, 9.0  # tuned on toy episodes 0-19, checked on 7000-7019 (docs/prepare_data.md)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


class BrokenVideo(UserError):
    """A video that cannot be decoded: prepare-data reports it and goes on with the next one."""


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int
    width: int
    height: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def probe(path: Path) -> VideoInfo:
    """fps, frame count and size; counts frames by decoding when the container does not say."""
    # PyAV: loaded only where a video file is opened
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BrokenVideo(f"{path}: expected a video stream, found none")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise BrokenVideo(f"{path}: the video stream has no frame rate")
            frames = stream.frames or sum(1 for _ in container.decode(stream))
            if frames == 0:
                raise BrokenVideo(f"{path}: the video has no frames")
            return VideoInfo(float(rate), int(frames), stream.codec_context.width, stream.codec_context.height)
    except BrokenVideo:
        raise
    except Exception as e:  # PyAV raises its own error types (InvalidDataError, ...) for unreadable files
        raise BrokenVideo(f"{path}: cannot be decoded as a video ({first_line(e)})") from None


def make_detector(kind: str, threshold: float | None, min_len: int):
    """A PySceneDetect detector. `adaptive` (default) compares each frame's HSV+edge change with its neighbours',
    so camera pans and zooms do not read as cuts while a cut inside the same set (small change) still does."""
    # scenedetect is optional: loaded only for prepare-data's cut detection
    from scenedetect.detectors import AdaptiveDetector, ContentDetector

    weights = ContentDetector.Components(delta_hue=1.0, delta_sat=1.0, delta_lum=1.0, delta_edges=1.0)
    if kind == "adaptive":
        return AdaptiveDetector(adaptive_threshold=threshold or ADAPTIVE_THRESHOLD, min_scene_len=min_len, min_content_val=MIN_CONTENT, weights=weights)
    if kind == "content":
        return ContentDetector(threshold=threshold or 27.0, min_scene_len=min_len, weights=weights)
    raise UserError(f"cut detector: expected 'adaptive' or 'content', found {kind!r}")


def detect_shots(path: Path, info: VideoInfo, threshold: float | None = None, min_shot_seconds: float = 0.5, kind: str = "adaptive") -> list[tuple[int, int]]:
    """Shot boundaries as [start, end) frame ranges, with a PySceneDetect detector (see make_detector)."""
    # scenedetect is optional: loaded only for prepare-data's cut detection
    from scenedetect import detect

    min_len = max(1, round(min_shot_seconds * info.fps))
    try:
        scenes = detect(str(path), make_detector(kind, threshold, min_len), backend="pyav", start_in_scene=True)
    except Exception as e:
        raise BrokenVideo(f"{path}: shot detection failed while decoding ({first_line(e)})") from None
    shots = [(s.frame_num, e.frame_num) for s, e in scenes]
    return [(a, b) for a, b in shots if b > a] or [(0, info.frames)]


def grab_frames(path: Path, wanted: list[int], size: tuple[int, int]) -> dict[int, np.ndarray]:
    """Decode once, keeping only the frames whose index is in `wanted`, resized (centre-cropped) to size=(W, H)."""
    # PyAV: loaded only where a video file is opened
    import av

    want = set(wanted)
    out: dict[int, np.ndarray] = {}
    last = max(want) if want else -1
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i in want:
                    out[i] = fit(frame.to_ndarray(format="rgb24"), size)
                if i >= last:
                    break
    except Exception as e:
        raise BrokenVideo(f"{path}: decoding failed at frame {len(out)} ({first_line(e)})") from None
    missing = want - out.keys()
    if missing:  # a container that over-reports its frame count: reuse the last decoded frame
        if not out:
            raise BrokenVideo(f"{path}: no frame could be decoded")
        for i in missing:
            out[i] = out[max(k for k in out if k <= i)] if any(k <= i for k in out) else out[min(out)]
    return out


def fit(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop to the target aspect ratio, then resize (area filter) to size=(W, H)."""
    # OpenCV is heavy: loaded only for optical flow
    import cv2

    w, h = size
    H, W = rgb.shape[:2]
    if W * h > H * w:  # too wide
        cw = round(H * w / h)
        rgb = rgb[:, (W - cw) // 2 : (W - cw) // 2 + cw]
    elif W * h < H * w:
        ch = round(W * h / w)
        rgb = rgb[(H - ch) // 2 : (H - ch) // 2 + ch]
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if rgb.shape[1] > w else cv2.INTER_LINEAR)
    return np.ascontiguousarray(rgb)


def dis_flow(frames: np.ndarray) -> np.ndarray:
    """Forward optical flow t → t+1 for [T, H, W, 3] uint8 frames with OpenCV DIS: [T-1, H, W, 2] float16 pixels."""
    # OpenCV is heavy: loaded only for optical flow
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    flows = [dis.calc(a, b, None) for a, b in zip(grey[:-1], grey[1:])]
    h, w = frames.shape[1:3]
    return np.stack(flows).astype(np.float16) if flows else np.zeros((0, h, w, 2), np.float16)

