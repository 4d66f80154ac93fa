"""Training shards from the toy world, in the format of docs/data_format.md (the same format prepare-data
writes from real videos). Each episode is a short generated story: its keyframes, clips, exact flow, face
crops with identity labels, the script and per-shot metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from tqdm.auto import tqdm

from moviedreamer.errors import UserError
from moviedreamer.safeio import save_safetensors
from moviedreamer.script import load_story
from moviedreamer.script.write import write_story
from moviedreamer.script.write import write_story as write_yaml
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import generate_story, read_story_params
from moviedreamer.toyworld.world import CHARACTER_IDS, FACE_KEYS, face_key

FORMAT = {"format": "moviedreamer-shards", "version": 1}
EPISODE_SEED_STRIDE = 1_000_003  # episode e of a dataset with seed s is the story of seed s * stride + e
MAX_STORY_SEED = 2**32 - 1


def face_crop(image: np.ndarray, box, size: int) -> np.ndarray:
    """A square crop around a face box, padded by 15% and resized to size×size (nearest keeps flat colours)."""
    x0, y0, x1, y1 = box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 0.575
    crop = Image.fromarray(image).crop((int(cx - half), int(cy - half), int(np.ceil(cx + half)), int(np.ceil(cy + half))))
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def render_episode(seed: int, shots: int, clip_frames: int, fps: int, size: int, face_size: int, min_face: int = 8, composed: bool = False,
                   face_labels: str = "catalogue"):
    """Render one episode; returns (tensors, script dict, per-shot metadata). With `composed`, the cast is random
    compositional characters. Face labels index world.FACE_KEYS (face_labels="faces": one label per face, which any
    character has) or CHARACTER_IDS ("catalogue")."""
    story = generate_story(shots * 4.5 / 60, seed, cast_size=4, fps=fps, resolution=(size, size), title=f"Episode {seed}", composed=composed)
    tmp_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"moviedreamer-episode-{os.getpid()}-{seed}.yaml"
    try:
        write_story(story, tmp_path)
        params = read_story_params(load_story(tmp_path))[:shots]
    finally:
        tmp_path.unlink(missing_ok=True)
    keyframes, clips, flows, faces, face_id, face_shot, meta = [], [], [], [], [], [], []
    for s, p in enumerate(params):
        frames, flow = [], []
        for f in range(clip_frames):
            fr = render_frame(p, f, fps, (size, size), flow=f < clip_frames - 1)
            frames.append(fr.image)
            if fr.flow is not None:
                flow.append(fr.flow.astype(np.float16))
            if f == 0:
                first = fr
        keyframes.append(frames[0])
        clips.append(np.stack(frames))
        flows.append(np.stack(flow) if flow else np.zeros((0, size, size, 2), np.float16))
        for cid, box in first.face_boxes.items():
            if min(box[2] - box[0], box[3] - box[1]) >= min_face:
                faces.append(face_crop(first.image, box, face_size))
                face_id.append(FACE_KEYS.index(face_key(cid)) if face_labels == "faces" else CHARACTER_IDS.index(cid))
                face_shot.append(s)
        meta.append({"scene": p.scene, "characters": list(p.characters), "action": p.action, "direction": p.direction, "camera": p.framing, "move": p.move,
                     "boxes": first.boxes, "face_boxes": first.face_boxes})
    story["scenes"] = _trim(story["scenes"], len(params))
    tensors = {
        "keyframes": torch.from_numpy(np.stack(keyframes)),
        "clips": torch.from_numpy(np.stack(clips)),
        "flow": torch.from_numpy(np.stack(flows)),
        "faces": torch.from_numpy(np.stack(faces) if faces else np.zeros((0, face_size, face_size, 3), np.uint8)),
        "face_identity": torch.tensor(face_id, dtype=torch.int64),
        "face_shot": torch.tensor(face_shot, dtype=torch.int64),
    }
    return tensors, story, meta


def _trim(scenes, n):
    out, left = [], n
    for sc in scenes:
        if left <= 0:
            break
        out.append({**sc, "shots": sc["shots"][:left]})
        left -= len(out[-1]["shots"])
    return out


def write_dataset(out_dir: str | Path, episodes: int, seed: int = 0, shots: int = 8, clip_frames: int = 8, fps: int = 8, size: int = 128,
                  face_size: int = 64, episodes_per_shard: int = 64, progress: bool = True, composed: float = 0.0) -> Path:
    """Write `episodes` episodes as shards; resumable (existing complete episodes are kept). A `composed` share of
    the episodes (every k-th, deterministic) casts random compositional characters; with any, face labels are faces
    (world.FACE_KEYS) for every episode."""
    if not 0 <= seed * EPISODE_SEED_STRIDE + episodes - 1 <= MAX_STORY_SEED:
        raise UserError(f"--seed {seed}: expected 0..{(MAX_STORY_SEED - episodes + 1) // EPISODE_SEED_STRIDE} for {episodes} episodes "
                        f"(episode seeds are seed x {EPISODE_SEED_STRIDE:,} + episode and must fit a story's 32-bit seed)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for e in tqdm(range(episodes), desc="toy episodes", unit="ep", disable=not progress):
        ep_id, shard = f"ep-{e:06d}", f"shard-{e // episodes_per_shard:05d}"
        base = out / shard / ep_id
        if not (base.with_suffix(".json").exists() and base.with_suffix(".safetensors").exists()):
            tensors, story, meta = render_episode(seed * EPISODE_SEED_STRIDE + e, shots, clip_frames, fps, size, face_size,
                                                  composed=_is_composed(e, composed), face_labels="faces" if composed > 0 else "catalogue")
            save_safetensors(tensors, base.with_suffix(".safetensors"))
            write_yaml(story, base.with_suffix(".yaml"))
            _write_json(meta, base.with_suffix(".json"))  # written last: marks the episode complete
        meta = json.loads(base.with_suffix(".json").read_text())
        with safe_open(str(base.with_suffix(".safetensors")), "pt") as f:
            n_faces = f.get_slice("face_identity").get_shape()[0]
        entries.append({"id": ep_id, "shard": shard, "shots": len(meta), "faces": n_faces})
    index = {**FORMAT, "source": "toyworld", "resolution": [size, size], "fps": fps, "clip_frames": clip_frames, "face_size": face_size,
             "identities": FACE_KEYS if composed > 0 else CHARACTER_IDS, "composed": composed, "episodes_per_shard": episodes_per_shard, "seed": seed, "episodes": entries}
    _write_json(index, out / "index.json")
    return out


def _is_composed(episode: int, share: float) -> bool:
    """Spread a share of composed episodes evenly (so a dataset's first episodes have both kinds)."""
    return share > 0 and int((episode + 1) * share) > int(episode * share)


def _write_json(data, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
