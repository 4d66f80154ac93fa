"""How much a shot should move, read from its action/camera text: a ridge regression of the log optical-flow
magnitude of real clips on the descriptor encoder's per-word states.

Why: SVD-style models take the motion amount as an input (the motion-bucket time id) that the user has to choose;
the toy I2V learnt to ignore it, and its motion hardly follows the action text (docs/video.md). The prior turns the
script's words into an expected motion so the sampler can act on it: a shot expected to move fast samples with a
different noise share (`fast_motion` / `fast_noise_share`), and best-of-N segments prefer the candidate whose
measured motion is closest to the expected one (`motion_weight`).

Features: `descriptor_inputs(encoder, texts, words)` (the pooled embedding and the first `words` per-word states)
flattened, standardised per feature; target ln(px/frame + `offset`) measured with DIS on the clips at `width`
pixels; fitted in closed form, in the dual form (n x n) since features often outnumber clips. Stored next to the
i2v weights as `motion_prior.safetensors` (weights) with its settings in the safetensors metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from moviedreamer.errors import CheckpointError, UserError
from moviedreamer.video.conditioning import descriptor_inputs

PRIOR_FILE = "motion_prior.safetensors"


@dataclass
class PriorConfig:
    words: int = 24  # per-word states after the pooled embedding (0: the pooled embedding only)
    ridge: float = 1000.0  # L2 strength on the standardised features
    offset: float = 0.1  # px/frame added before the log (still shots have ~0 flow)
    width: int = 128  # frame width the motion was measured at (px/frame scale with it)
    template: str = "{action}. {camera}"  # the descriptor text (I2VSettings.descriptor_template)
    fitted_on: int = 0  # clips
    heldout_corr: float | None = None  # Pearson r of the log prediction on the held-out tenth


class MotionPrior:
    """predict(features [B, F]) -> expected px/frame at a frame width."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, bias: float, config: PriorConfig):
        self.mean, self.scale, self.weight, self.bias, self.config = mean.float(), scale.float(), weight.float(), float(bias), config

    @classmethod
    def fit(cls, features: torch.Tensor, motion: np.ndarray, config: PriorConfig) -> "MotionPrior":
        """features [N, F]; motion [N] px/frame at config.width."""
        x = features.double().reshape(len(features), -1)
        y = torch.log(torch.as_tensor(np.asarray(motion), dtype=torch.float64) + config.offset)
        if len(x) < 2 or len(x) != len(y):
            raise UserError(f"motion prior: expected at least 2 clips with one motion figure each, found {len(x)} features and {len(y)} figures")
        mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - mean) / scale
        alpha = torch.linalg.solve(z @ z.T + config.ridge * torch.eye(len(z), dtype=z.dtype), y - y.mean())
        return cls(mean, scale, z.T @ alpha, float(y.mean()), config)

    def log_motion(self, features: torch.Tensor) -> torch.Tensor:
        x = features.float().reshape(len(features), -1)
        if x.shape[1] != len(self.weight):
            raise UserError(f"motion prior: fitted on {len(self.weight)} features ({self.config.words} words), found {x.shape[1]}; "
                            f"use the descriptor encoder it was fitted with")
        return ((x - self.mean) / self.scale) @ self.weight + self.bias

    def predict(self, features: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """Expected px/frame [B] at `width` (default: the width it was measured at)."""
        px = (self.log_motion(features).exp() - self.config.offset).clamp_min(0.0)
        return px * (float(width) / self.config.width if width else 1.0)

    def text_features(self, encoder, texts: list[str]) -> torch.Tensor:
        return descriptor_inputs(encoder, texts, self.config.words)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / PRIOR_FILE
        tensors = {"mean": self.mean, "scale": self.scale, "weight": self.weight, "bias": torch.tensor([self.bias])}
        save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(path), metadata={"config": json.dumps(asdict(self.config))})
        return path

    @classmethod
    def load(cls, folder: Path) -> "MotionPrior | None":
        """The prior stored in an i2v folder, or None when it has none."""
        path = Path(folder) / PRIOR_FILE
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as f:
                meta, t = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
            config = PriorConfig(**json.loads(meta["config"]))
            return cls(t["mean"], t["scale"], t["weight"], float(t["bias"][0]), config)
        except (KeyError, TypeError, ValueError, OSError, SafetensorError) as e:
            raise CheckpointError(f"{path}: expected a motion prior written by `moviedreamer train motion-prior` "
                                  f"(mean, scale, weight, bias and a config), found an unreadable file ({e})") from e


def log_distance(measured: float, expected: float, offset: float = 0.1) -> float:
    """|ln((measured + offset) / (expected + offset))|: how far a clip's motion is from the expected one, as a ratio."""
    return abs(float(np.log((measured + offset) / (expected + offset))))
