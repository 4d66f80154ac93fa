"""Metric formulas, each on plain arrays so that they can be tested on their own.

flicker        VBench temporal flickering: 1 − mean_t mean_px |f_t − f_{t−1}| / 255        (1 = perfectly steady)
motion         mean optical-flow magnitude (px/frame) from OpenCV DIS (no learned weights)
dynamic        fraction of shots whose motion exceeds a threshold (VBench's dynamic degree, with DIS flow)
consistency    per character: ST = mean cosine of face embeddings between adjacent appearances,
               LT = mean cosine over all pairs of appearances, REF = mean cosine to the reference face
clip score     100 · max(cos(text embedding, image embedding), 0), averaged over shots
judge          fraction of shots where the toy judge sees the script's scene / exact character set
"""

from __future__ import annotations

import itertools

import numpy as np


def flicker_score(frames: np.ndarray) -> float:
    """frames: uint8 [T, H, W, 3]; VBench: 1 − mean |f_t − f_{t−1}| / 255 over consecutive pairs."""
    if len(frames) < 2:
        return 1.0
    diffs = [np.abs(b.astype(np.int16) - a.astype(np.int16)).mean() for a, b in zip(frames, frames[1:])]
    return float(1.0 - np.mean(diffs) / 255.0)


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow a → b (float32 [H, W, 2], pixels) with OpenCV's DIS, on grey images."""
    # OpenCV is heavy: loaded only for optical flow
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b))
    return dis.calc(ga, gb, None)


def motion_magnitude(frames: np.ndarray, stride: int = 1) -> float:
    """Mean DIS flow magnitude (px/frame) over consecutive frame pairs of one shot."""
    if len(frames) < 2:
        return 0.0
    mags = [np.linalg.norm(dis_flow(frames[i], frames[i + stride]), axis=-1).mean() / stride for i in range(0, len(frames) - stride, stride)]
    return float(np.mean(mags))


def dynamic_degree(per_shot_motion: list[float], threshold: float = 0.5) -> float:
    return float(np.mean([m > threshold for m in per_shot_motion])) if per_shot_motion else 0.0


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def consistency(appearances: list[np.ndarray], reference: np.ndarray | None = None) -> dict[str, float | None]:
    """Face-embedding consistency of one character over its appearances, in movie order."""
    st = [cosine(a, b) for a, b in zip(appearances, appearances[1:])]
    lt = [cosine(a, b) for a, b in itertools.combinations(appearances, 2)]
    ref = [cosine(a, reference) for a in appearances] if reference is not None else []
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    return {"st": mean(st), "lt": mean(lt), "ref": mean(ref), "appearances": len(appearances)}


def clip_score(text_embeddings: np.ndarray, image_embeddings: np.ndarray) -> float:
    t = text_embeddings / np.linalg.norm(text_embeddings, axis=-1, keepdims=True)
    i = image_embeddings / np.linalg.norm(image_embeddings, axis=-1, keepdims=True)
    return float(100 * np.clip((t * i).sum(-1), 0, None).mean())


def judge_fidelity(predictions: list[dict], truths: list[dict]) -> dict[str, float]:
    """predictions/truths: [{"scene", "characters"}] per shot → scene, character-set and both accuracies."""
    scene = [p["scene"] == t["scene"] for p, t in zip(predictions, truths)]
    chars = [set(p["characters"]) == set(t["characters"]) for p, t in zip(predictions, truths)]
    return {"scene": float(np.mean(scene)), "characters": float(np.mean(chars)), "scene_and_characters": float(np.mean([a and b for a, b in zip(scene, chars)]))}
