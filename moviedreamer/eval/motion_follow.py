"""How closely a shot's motion follows its motion reference (`motion_reference:`, video/motion_clone.py).

Two figures, both indifferent to what the pictures show (the shot has its own scene and characters):
- `flow_follow`: the cosine between the two clips' global motion over time — OpenCV's Farneback flow of every frame
  pair, averaged over the frame to one (dx, dy) per pair, stacked over the shot, after the reference is resampled to
  the shot's frame rate, length and size. 1: the same moves at the same moments; 0: unrelated or no motion (a still
  clip has no motion to compare, and scores 0).
- `action_agrees` (with an action judge): whether the judge reads the same action (and direction for walk / run) in
  both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moviedreamer.media import frame_rate, read_frames
from moviedreamer.video.motion_clone import farneback_flow, resample_clip

STILL = 1e-3  # px/frame: below this a clip's motion is no motion


def global_motion(clip: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] uint8 -> the mean flow (dx, dy) of every frame pair [T - 1, 2]."""
    flow = farneback_flow(clip).numpy()
    return flow.mean(axis=(1, 2)) if len(flow) else np.zeros((0, 2))


def flow_follow(clip: np.ndarray, reference: np.ndarray) -> float:
    """Cosine of the two clips' global motion sequences (same length and size); 0 when either does not move."""
    a, b = global_motion(clip).ravel(), global_motion(reference).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < STILL * max(1, len(a)) ** 0.5 or nb < STILL * max(1, len(b)) ** 0.5:
        return 0.0
    return float(a @ b / (na * nb))


def read_reference(path: str | Path, n_frames: int, fps: float, size: tuple[int, int]) -> np.ndarray:
    """The reference as the clip stage saw it: at the shot's frame rate, length and size (width, height)."""
    frames = np.stack(list(read_frames(path)))
    return resample_clip(frames, frame_rate(path, fps), n_frames, fps, size)


def follow(clip: np.ndarray, reference: np.ndarray, judge=None) -> dict:
    """The shot's figures against its (already resampled) reference."""
    out = {"flow_follow": round(flow_follow(clip, reference), 4)}
    if judge is not None:
        from moviedreamer.toyworld.action_judge import predict_clips

        from moviedreamer.eval.referee import WINDOW

        mine, theirs = predict_clips(judge, np.stack([clip[:WINDOW], reference[:WINDOW]]))
        same = mine["action"] == theirs["action"]
        if same and theirs.get("direction") and theirs["action"] in ("walk", "run"):
            same = mine.get("direction") == theirs.get("direction")
        out["action_agrees"] = bool(same)
    return out
