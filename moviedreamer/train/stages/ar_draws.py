"""The AR stage's per-episode draws: which face of each character, the order shots enter, which frames are references.

Drawn from the data stream's seeded rng, so a resumed run repeats an uninterrupted one (train/stages/ar.py).
"""

from __future__ import annotations

import torch


def pick_faces(faces: dict[str, torch.Tensor], rng, random_face: bool, face_drop: float = 0.0) -> dict[str, torch.Tensor]:
    """One face embedding [1, Df] per character: a random one of its crops (`random_face`) or its first; a character
    is left without a face with probability `face_drop`."""
    out = {}
    for cid, embs in faces.items():
        if face_drop and rng.random() < face_drop:
            continue
        i = int(rng.integers(len(embs))) if random_face else 0
        out[cid] = embs[i : i + 1]
    return out


def episode_order(n_shots: int, reverse: bool) -> list[int]:
    """The order shots enter the sequence: as filmed, or reversed (episode reversal)."""
    return list(range(n_shots))[::-1] if reverse else list(range(n_shots))


def pick_references(n_shots: int, count: int, rng, clips=None) -> list[tuple[int, int]]:
    """`count` frames (shot, t) of the episode for few-shot references (distinct shots while there are enough);
    t > 0 when the shard has clips, so a reference is rarely the exact keyframe the model must predict."""
    shots = rng.choice(n_shots, size=count, replace=count > n_shots).tolist()
    frames = clips.shape[1] if clips is not None else 1
    return [(int(s), int(rng.integers(1, frames)) if frames > 1 else 0) for s in shots]
