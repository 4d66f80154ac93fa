"""The video referee: does each clip show its shot's action, and does it keep the picture of the truth?

The frame judge reads single frames, so a keyframe repeated for the shot's length (a slideshow) or a clip that
dissolves into noise pass it; whole-frame optical flow counts dissolving noise as motion. The toy world renders the
truth of any story in its vocabulary, so two referees can compare a movie with what it should show:

- the action judge (toyworld/action_judge.py) reads each shot's opening clip (up to `WINDOW` frames, where sits and
  turns happen) and says the action, its direction and the camera move; compared with the shot's script;
- a Fréchet distance between toy-CLIP image features of the generated frames and of the truth's frames of the same
  shots (the two are not aligned frame by frame: only their distributions are compared), with its floor (the truth
  through the VAE and back, what a perfect clip model could reach) and the decay: the distance of the last quarter
  of every shot against that of its first quarter (a clip that fills with blotches grows it).

Features are L2-normalised pooled embeddings projected on the truth's leading principal directions (`DIMS`), so
that the covariances are estimated from enough frames; per shot, where frames are few, the covariance is shrunk to
its diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import linalg

from moviedreamer.toyworld.action_judge import predict_clips
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.world import ShotParams

WINDOW = 16  # frames the action judge reads (it was trained on 8-16)
DIMS = 32  # principal directions the frame features are compared in
SHRINK = 0.5  # per-shot covariances: this much of the off-diagonal is dropped
STRIP = ("first", "middle", "last")


def truth_clip(params: ShotParams, n_frames: int, fps: int, size: tuple[int, int]) -> np.ndarray:
    """The ground-truth render of a shot: uint8 [n_frames, H, W, 3]."""
    return np.stack([render_frame(params, f, fps, size).image for f in range(n_frames)])


def quarters(n: int) -> tuple[slice, slice]:
    """The first and last quarter of n frames (at least one frame each)."""
    q = max(1, n // 4)
    return slice(0, q), slice(n - q, n)


def strip_frames(clip: np.ndarray) -> list[np.ndarray]:
    """First, middle and last frame of a clip."""
    return [clip[0], clip[len(clip) // 2], clip[-1]]


@torch.no_grad()
def image_features(vision, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    """uint8 [N, H, W, 3] → L2-normalised pooled image embeddings [N, D] (float64)."""
    out = []
    for i in range(0, len(frames), batch):
        pooled, _ = vision.encode_image(torch.from_numpy(np.ascontiguousarray(frames[i : i + batch])).permute(0, 3, 1, 2).float() / 255)
        out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy().astype(np.float64))
    return np.concatenate(out) if out else np.zeros((0, 1))


def frechet_distance(a: np.ndarray, b: np.ndarray, shrink: float = 0.0) -> float:
    """Fréchet distance between Gaussians fitted to feature rows a [N, d] and b [M, d]; `shrink` blends each
    covariance towards its diagonal (for few rows)."""
    def stats(x):
        mu = x.mean(0)
        cov = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))
        cov = np.atleast_2d(cov)
        return mu, (1 - shrink) * cov + shrink * np.diag(np.diag(cov))

    (m1, c1), (m2, c2) = stats(a), stats(b)
    root = np.real(linalg.sqrtm(c1 @ c2))
    return float(max(0.0, ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * root)))


@dataclass
class ShotReferee:
    """What the referee keeps of one shot while the movie streams (features, not frames)."""

    index: int
    params: ShotParams
    generated: np.ndarray  # [n, D] features of the generated frames
    truth: np.ndarray  # [n, D] features of the truth's frames
    floor: np.ndarray | None  # [n, D] features of the truth through the VAE, or None
    judged: dict  # the action judge on the opening clip
    strip: list = field(default_factory=list)  # first / middle / last generated frame


class Referee:
    """Collects per-shot evidence (`add_shot`) and sums it up (`summary`). `vae`: the profile's VAE for the floor
    (None: no floor)."""

    def __init__(self, action_judge, vision, vae=None, keep_strips: bool = True):
        self.judge, self.vision, self.vae, self.keep_strips = action_judge, vision, vae, keep_strips
        self.shots: list[ShotReferee] = []

    def add_shot(self, index: int, params: ShotParams, clip: np.ndarray, fps: int) -> ShotReferee:
        size = (clip.shape[2], clip.shape[1])
        truth = truth_clip(params, len(clip), fps, size)
        window = clip[: min(WINDOW, len(clip))]
        judged = predict_clips(self.judge, window[None])[0] if len(window) >= 2 else {"action": "stand", "direction": None, "move": "static"}
        floor = image_features(self.vision, self.round_trip(truth)) if self.vae is not None else None
        shot = ShotReferee(index, params, image_features(self.vision, clip), image_features(self.vision, truth), floor,
                           {k: judged[k] for k in ("action", "direction", "move")}, strip_frames(clip) if self.keep_strips else [])
        self.shots.append(shot)
        return shot

    @torch.no_grad()
    def round_trip(self, frames: np.ndarray, batch: int = 16) -> np.ndarray:
        """Frames encoded by the VAE and decoded again (the best any model in its latent space can draw)."""
        out = []
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[i : i + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
            x = x.to(self.vae.device, self.vae.dtype)
            y = self.vae.decode(self.vae.encode(x).latent_dist.mode()).sample
            out.append(((y.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out)

    def basis(self) -> tuple[np.ndarray, np.ndarray]:
        """The truth's mean and leading principal directions [D, d]."""
        truth = np.concatenate([s.truth for s in self.shots])
        mean = truth.mean(0)
        _, _, vt = np.linalg.svd(truth - mean, full_matrices=False)
        d = int(min(DIMS, max(2, len(truth) // 4), vt.shape[0]))
        return mean, vt[:d].T

    def summary(self) -> tuple[dict, list[dict]]:
        """(movie-level figures, one dict per shot)."""
        if not self.shots:
            return {}, []
        mean, basis = self.basis()
        proj = lambda x: (x - mean) @ basis  # noqa: E731
        rows, hits = [], {"action": [], "direction": [], "move": []}
        first_q, last_q, truth_all, gen_all, floor_all = [], [], [], [], []
        for s in self.shots:
            g, t = proj(s.generated), proj(s.truth)
            a, b = quarters(len(g))
            first_q.append(g[a])
            last_q.append(g[b])
            truth_all.append(t)
            gen_all.append(g)
            if s.floor is not None:
                floor_all.append(proj(s.floor))
            p = s.params
            row = {"index": s.index, "truth": {"action": p.action, "direction": p.direction, "move": p.move}, "judged": s.judged,
                   "frame_distance": round(frechet_distance(g, t, SHRINK), 5),
                   "decay": round(_ratio(frechet_distance(g[b], t, SHRINK), frechet_distance(g[a], t, SHRINK)), 4)}
            hits["action"].append(s.judged["action"] == p.action)
            hits["move"].append(s.judged["move"] == p.move)
            if p.direction is not None:
                hits["direction"].append(s.judged["action"] == p.action and s.judged["direction"] == p.direction)
            rows.append(row)
        truth = np.concatenate(truth_all)
        out = {
            "action_accuracy": float(np.mean(hits["action"])),
            "direction_accuracy": float(np.mean(hits["direction"])) if hits["direction"] else None,
            "camera_move_accuracy": float(np.mean(hits["move"])),
            "frame_distance": frechet_distance(np.concatenate(gen_all), truth),
            "frame_distance_floor": frechet_distance(np.concatenate(floor_all), truth) if floor_all else None,
            "frame_distance_first_quarter": frechet_distance(np.concatenate(first_q), truth),
            "frame_distance_last_quarter": frechet_distance(np.concatenate(last_q), truth),
            "shots": len(self.shots),
            "directed_shots": len(hits["direction"]),
            "standing_shots": sum(s.params.action == "stand" for s in self.shots),  # where a still clip is right
        }
        out["decay"] = _ratio(out["frame_distance_last_quarter"], out["frame_distance_first_quarter"])
        return out, rows


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 1e-9 else (1.0 if a <= 1e-9 else float("inf"))
