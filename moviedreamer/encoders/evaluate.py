"""Acceptance figures of the toy encoders on fresh toy-world renders (seeds never used in training).

- faces: detection recall (a visible true face — at least half inside the frame — of ≥ 16 px counts as found when a detection overlaps it with IoU ≥ 0.5) and
  verification — TAR at a FAR (the genuine-pair acceptance rate at the threshold that lets through the given
  fraction of impostor pairs), over all pairs of crops aligned from the true boxes.
"""

from __future__ import annotations

import warnings

import numpy as np

from moviedreamer.encoders.toy_detector import box_landmarks
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import CHARACTER_IDS, SCENE_IDS, face_key, random_cast

FRESH_SEED = 50_000_000  # training data uses story seeds < 2**32 drawn from small ranges; renders here use their own


def fresh_frames(n: int, seed: int = FRESH_SEED, size: int = 128, composed: float = 0.0):
    """n random toy frames (random shot, random time) with their truth; a `composed` share of the shots casts random
    compositional characters (three per shot from a pool of 24 drawn for the call, so that faces recur), the rest
    the catalogue."""
    rng = np.random.default_rng(seed)
    pool = random_cast(rng, 24) if composed > 0 else []
    out = []
    for _ in range(n):
        cast = [str(c) for c in rng.choice(pool, 3, replace=False)] if composed > 0 and rng.random() < composed else list(CHARACTER_IDS)
        shot = random_shot(rng, str(rng.choice(SCENE_IDS)), cast, layout_seed=int(rng.integers(1 << 30)))
        out.append(render_frame(shot, int(rng.integers(0, 32)), 8, (size, size)))
    return out


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def face_figures(embedder, frames: int = 500, seed: int = FRESH_SEED, min_face: int = 16, far: float = 1e-3, composed: float = 0.0) -> dict:
    """{"recall", "faces", "false_per_frame", "tar", "far", "threshold", "genuine_pairs", "impostor_pairs"}. A genuine
    pair is two crops of one face (world.face_key: characters who differ only in clothes or hat show one face)."""
    # insightface is heavy: loaded only when a face pack is read
    from insightface.utils import face_align

    found = total = false = 0
    crops, ids = [], []
    for fr in fresh_frames(frames, seed, composed=composed):
        dets = embedder.finder.find_faces(fr.image) if embedder.finder is not None else []
        truth = [(cid, b) for cid, b in fr.face_boxes.items() if cid in fr.visible and min(b[2] - b[0], b[3] - b[1]) >= min_face]
        for cid, box in truth:
            total += 1
            found += any(iou(d.bbox, box) >= 0.5 for d in dets)
            bgr = np.ascontiguousarray(fr.image[:, :, ::-1])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                crops.append(face_align.norm_crop(bgr, landmark=box_landmarks(box), image_size=112)[:, :, ::-1].copy())
            ids.append(face_key(cid))
        all_truth = list(fr.face_boxes.values())
        false += sum(not any(iou(d.bbox, b) >= 0.3 for b in all_truth) for d in dets)
    emb = embedder.recognizer.embed_crops(crops).numpy() if crops else np.zeros((0, 1))
    sims = emb @ emb.T
    iu = np.triu_indices(len(ids), 1)
    same = np.array(ids)[iu[0]] == np.array(ids)[iu[1]]
    genuine, impostor = sims[iu][same], sims[iu][~same]
    threshold = float(np.quantile(impostor, 1 - far)) if len(impostor) else 1.0
    return {"recall": found / max(1, total), "faces": total, "false_per_frame": false / max(1, frames),
            "tar": float((genuine > threshold).mean()) if len(genuine) else 0.0, "far": far, "threshold": threshold,
            "genuine_pairs": int(len(genuine)), "impostor_pairs": int(len(impostor))}
