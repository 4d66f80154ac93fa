"""The toy world's frame judge as the profile uses it: the compositional look judge (look_judge.py: scene, framing
and every visible character's look, trained only on rendered frames) loaded from the profile's folder, and
`moviedreamer toyworld judge`'s readable predictions for images, movies and generate-movie folders. It referees
every toy-profile keyframe figure. Camera moves (pan, zoom) are not judged here: a single frame cannot show them
(the action judge reads clips)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from moviedreamer.errors import CheckpointError, UserError
from moviedreamer.media import frame_rate, read_frames
from moviedreamer.toyworld.judge_weights import read_folder
from moviedreamer.toyworld.look_judge import DEFAULT_DIR, LookJudge

__all__ = ["DEFAULT_DIR", "load_judge", "judge_paths"]


def load_judge(path: str | Path | None = None) -> LookJudge:
    """The frame judge in `path` (default: the toy profile's)."""
    path = Path(path) if path else DEFAULT_DIR
    config, state = read_folder(path, "the toy judge", "moviedreamer toyworld train-judge -o RUN")
    if config.get("kind") != "look" or "reader_width" not in config:
        raise CheckpointError(f"{path / 'config.json'}: expected the compositional frame judge (kind 'look', version 3), found an older "
                              "judge; make it with: moviedreamer toyworld train-judge -o RUN")
    return LookJudge.from_state(config, state)


def judge_paths(inputs: list[Path]) -> list[str]:
    """Human-readable predictions for images, mp4 movies (one line per second) or generate-movie folders (per shot)."""
    judge, lines = load_judge(), []
    for path in inputs:
        if path.is_dir() and (path / "manifest.json").is_file():
            manifest = json.loads((path / "manifest.json").read_text())
            frames = np.stack([np.asarray(Image.open(path / s["keyframe"]).convert("RGB")) for s in manifest["shots"]])
            for s, p in zip(manifest["shots"], judge.predict(frames)):
                lines.append(f"{path} shot {s['index']} ({s['scene']}): {_fmt(p)}")
        elif path.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm"):
            fps = frame_rate(path)
            sampled = [(i, f) for i, f in enumerate(read_frames(path)) if i % max(1, round(fps)) == 0]
            for (i, _), p in zip(sampled, judge.predict(np.stack([f for _, f in sampled]))):
                lines.append(f"{path} t={i / fps:.1f}s: {_fmt(p)}")
        elif path.is_file():
            try:
                img = np.asarray(Image.open(path).convert("RGB"))
            except Exception:
                raise UserError(f"{path}: expected an image, a movie or a generate-movie folder") from None
            lines.append(f"{path}: {_fmt(judge.predict(img[None])[0])}")
        else:
            raise UserError(f"{path}: expected an image, a movie or a generate-movie folder, found nothing there")
    return lines


def _fmt(p: dict) -> str:
    chars = ", ".join(p["characters"]) or "nobody"
    return f"scene={p['scene']} ({p['confidence']:.2f}) characters=[{chars}] framing={p['framing']}"
