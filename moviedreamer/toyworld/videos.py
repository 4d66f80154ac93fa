"""Toy episodes as mp4 files with known cuts: the test bed of `prepare-data` (shot detection, characters)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from moviedreamer.media import ClipWriter
from moviedreamer.script import load_story
from moviedreamer.script.write import write_story
from moviedreamer.toyworld.render import render_clip, render_frame
from moviedreamer.toyworld.story import generate_story, read_story_params


def write_episode_video(seed: int, out_dir: str | Path, seconds: float = 30.0, fps: int = 8, size: int = 128, captions_dir: str | Path | None = None) -> dict:
    """Render a generated toy story of about `seconds` into OUT/ep-SEED.mp4 (H.264); write a JSON caption sidecar
    (one cue per shot: action, camera, setting) into `captions_dir` if given. Returns the truth:
    {"video", "cuts": [frame where each shot after the first starts],
     "shots": [{"start", "end", "characters", "scene", "face_boxes": {id: [x0, y0, x1, y1] on the shot's first frame}}]}."""
    story = generate_story(seconds / 60, seed, cast_size=4, fps=fps, resolution=(size, size), title=f"Toy episode {seed}")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_story(story, Path(tmp) / "story.yaml")
        loaded = load_story(path)
        params = read_story_params(loaded)
    settings = [sc["setting"] for sc in story["scenes"] for _ in sc["shots"]]
    texts = [(sh["action"], sh["camera"]) for sc in story["scenes"] for sh in sc["shots"]]
    out = Path(out_dir)
    video = out / f"ep-{seed:06d}.mp4"
    writer = ClipWriter(video, fps, size, size)
    shots, frame = [], 0
    for p in params:
        n = round(p.duration * fps)
        for image in render_clip(p, n, fps, (size, size)):
            writer.write(image)
        faces = {cid: [float(v) for v in box] for cid, box in render_frame(p, 0, fps, (size, size)).face_boxes.items()}
        shots.append({"start": frame, "end": frame + n, "characters": sorted(p.characters), "scene": p.scene, "face_boxes": faces})
        frame += n
    writer.close()
    if captions_dir is not None:
        cues = [{"start": s["start"] / fps, "end": s["end"] / fps, "text": a, "camera": c, "setting": st}
                for s, (a, c), st in zip(shots, texts, settings)]
        cap = Path(captions_dir) / f"ep-{seed:06d}.json"
        cap.parent.mkdir(parents=True, exist_ok=True)
        cap.write_text(json.dumps({"title": story["title"], "cues": cues}, indent=1))
    return {"video": str(video), "fps": fps, "cuts": [s["start"] for s in shots[1:]], "shots": shots}
