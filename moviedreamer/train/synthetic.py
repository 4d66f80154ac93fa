"""Tiny synthetic shards in the exact training-data format (docs/data_format.md), for tests and smoke runs
when the toy world is not at hand: flat-colour frames with a moving square, deterministic from a seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from moviedreamer.safeio import save_safetensors
from moviedreamer.script.models import MIN_SIDE, SIDE_MULTIPLE


def write_synthetic_shards(root: str | Path, episodes: int = 8, shots: int = 2, frames: int = 4, size: int = 32,
                           episodes_per_shard: int = 4, seed: int = 0, face_size: int = 16) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    identities = ["ada", "bo"]
    entries = []
    for e in range(episodes):
        rng = np.random.default_rng([seed, e])
        shard = f"shard-{e // episodes_per_shard:05d}"
        ep_id = f"ep-{e:06d}"
        clips = np.empty((shots, frames, size, size, 3), np.uint8)
        meta = []
        for s in range(shots):
            bg, fg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            side = int(rng.integers(size // 4, size // 2))
            x0, y0 = rng.integers(0, size - side, 2)
            dx = int(rng.integers(-2, 3))
            for t in range(frames):
                img = np.broadcast_to(bg, (size, size, 3)).copy()
                x = int(np.clip(x0 + dx * t, 0, size - side))
                img[y0 : y0 + side, x : x + side] = fg
                clips[s, t] = img
            meta.append({"scene": "room", "characters": [identities[s % 2]], "action": "stands", "camera": "wide shot",
                         "boxes": {identities[s % 2]: [int(x0), int(y0), int(x0 + side), int(y0 + side)]},
                         "face_boxes": {identities[s % 2]: [int(x0), int(y0), int(x0 + side // 2), int(y0 + side // 2)]}})
        faces = rng.integers(0, 256, (shots, face_size, face_size, 3), dtype=np.uint8)
        tensors = {
            "keyframes": torch.from_numpy(clips[:, 0].copy()),
            "clips": torch.from_numpy(clips),
            "flow": torch.zeros((shots, frames - 1, size, size, 2), dtype=torch.float16),
            "faces": torch.from_numpy(faces),
            "face_identity": torch.tensor([s % 2 for s in range(shots)], dtype=torch.int64),
            "face_shot": torch.arange(shots, dtype=torch.int64),
        }
        folder = root / shard
        save_safetensors(tensors, folder / f"{ep_id}.safetensors")
        (folder / f"{ep_id}.json").write_text(json.dumps(meta))
        # a story's resolution has a user-facing floor; the frames' own size is in index.json
        side = max(MIN_SIDE, -(-size // SIDE_MULTIPLE) * SIDE_MULTIPLE)
        story = {"title": f"synthetic {e}", "style": "flat colour", "fps": 8, "resolution": [side, side], "seed": e,
                 "characters": [{"id": i, "name": i.title(), "description": f"a square called {i}"} for i in identities],
                 "scenes": [{"id": "room", "setting": "a plain room", "plot": "a square moves",
                             "shots": [{"duration": 1, "characters": [m["characters"][0]], "action": m["action"], "camera": m["camera"]} for m in meta]}]}
        (folder / f"{ep_id}.yaml").write_text(yaml.safe_dump(story, sort_keys=False))
        entries.append({"id": ep_id, "shard": shard, "shots": shots, "faces": shots})
    index = {"format": "moviedreamer-shards", "version": 1, "source": "synthetic", "resolution": [size, size], "fps": 8,
             "clip_frames": frames, "face_size": face_size, "identities": identities, "episodes": entries}
    (root / "index.json").write_text(json.dumps(index, indent=1))
    return root
