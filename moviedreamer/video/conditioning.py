"""What the I2V UNet is conditioned on, built the same way for training and sampling.

- concatenated latents [B, F, C, h, w]: the conditioning frame's *unscaled* latent (SVD convention) repeated over
  the F frames, plus noise augmentation; with a last-frame instruction (PixelDance) the last position holds the
  end frame's latent instead. Without one, the last position is the conditioning frame like every other.
- cross-attention tokens: the anchor's CLIP image embedding (+ the shot's descriptor embedding), see model.py.
- added time ids: [fps - 1, motion bucket, noise augmentation strength].

Pixel <-> latent helpers decode in chunks (an SVD `AutoencoderKLTemporalDecoder` gets `num_frames` per chunk).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

from moviedreamer.errors import UserError


@dataclass
class ClipCondition:
    """Per-shot conditioning the pipeline hands the clip renderer (`EncodedStory.clip_conditions[i]`).

    descriptor: the shot's action/camera descriptor embedding [D] (or [1, D]); None with `text` set: the renderer
    encodes `text` with its descriptor encoder; both None: no descriptor (a zero token).
    motion_bucket / noise_aug: override the model's defaults for this shot.
    looks / cast: the description embeddings of the shot's characters [N, Dd] and of the story's [M, Dd], for the
    segment reranker's presence term (encoders/presence.py); None: not checked.
    motion_reference: a video the shot should move like (MotionClone, video/motion_clone.py); None: its own motion.
    duration: the shot's length in seconds when the clip is only its opening (a bench's first frames of a longer
    shot): the motion field paces camera moves by it; None: the clip's own length."""

    descriptor: torch.Tensor | np.ndarray | None = None
    text: str | None = None
    motion_bucket: float | None = None
    noise_aug: float | None = None
    looks: torch.Tensor | None = None
    cast: torch.Tensor | None = None
    motion_reference: str | None = None
    duration: float | None = None


def as_condition(condition) -> ClipCondition:
    """Accept what the pipeline may pass: None, a ClipCondition, an embedding (tensor/array), or descriptor text."""
    if condition is None:
        return ClipCondition()
    if isinstance(condition, ClipCondition):
        return condition
    if isinstance(condition, str):
        return ClipCondition(text=condition)
    if isinstance(condition, (torch.Tensor, np.ndarray)):
        return ClipCondition(descriptor=condition)
    if isinstance(condition, dict):
        return ClipCondition(**{k: condition[k] for k in ("descriptor", "text", "motion_bucket", "noise_aug", "looks", "cast", "motion_reference") if k in condition})
    raise UserError(f"clip condition: expected a ClipCondition, an embedding, a descriptor text or None, found {type(condition).__name__}")


# ------------------------------------------------------------------------------------------------ pixels / latents


def to_pixels(images) -> torch.Tensor:
    """uint8 [H, W, 3] / [B, H, W, 3] (numpy or torch) -> float [B, 3, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.array(images, copy=not images.flags.writeable, order="C")) if isinstance(images, np.ndarray) else images
    if not isinstance(x, torch.Tensor):
        raise UserError(f"expected an RGB image array, found {type(images).__name__}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[-1] != 3:
        raise UserError(f"expected RGB images [H, W, 3] or [B, H, W, 3], found shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise UserError(f"expected uint8 RGB images, found {x.dtype}")
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    return ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> the posterior mode in the *scaled* space [B, C, h, w] (what the UNet denoises)."""
    dtype, device = next(vae.parameters()).dtype, next(vae.parameters()).device
    out = [vae.encode(pixels[i : i + chunk].to(device, dtype)).latent_dist.mode() for i in range(0, len(pixels), chunk)]
    return torch.cat(out).float() * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Scaled latents [N, C, h, w] -> pixels [N, 3, H, W] in [-1, 1], `chunk` frames per decode call."""
    dtype, device = next(vae.parameters()).dtype, next(vae.parameters()).device
    temporal = "num_frames" in inspect.signature(vae.decode).parameters
    out = []
    for i in range(0, len(latents), chunk):
        z = latents[i : i + chunk].to(device, dtype) / vae.config.scaling_factor
        out.append(vae.decode(z, num_frames=len(z)).sample if temporal else vae.decode(z).sample)
    return torch.cat(out).float()


def check_size(vae, height: int, width: int) -> None:
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    if height % down or width % down:
        raise UserError(f"i2v: frames of {width}x{height} are not a multiple of the VAE's downsampling factor {down}; "
                        f"use a resolution divisible by {down}")


# ------------------------------------------------------------------------------------------------ conditioning


def augment(latent_unscaled: torch.Tensor, strength, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise augmentation of conditioning latents: z + strength * eps (strength a float or [B])."""
    s = torch.as_tensor(strength, dtype=latent_unscaled.dtype, device=latent_unscaled.device)
    if s.dim() == 1:
        s = s.view(-1, *([1] * (latent_unscaled.dim() - 1)))
    noise = torch.randn(latent_unscaled.shape, generator=generator, dtype=latent_unscaled.dtype)  # CPU draws: the same on any device
    return latent_unscaled + s * noise.to(latent_unscaled.device)


def concat_latents(anchor: torch.Tensor, frames: int, end: torch.Tensor | None = None) -> torch.Tensor:
    """anchor [B, C, h, w] repeated to [B, F, C, h, w]; `end` [B, C, h, w] (optional) at the last position.
    `end` may also be given per sample with a keep mask folded in by the caller (rows equal to the anchor = dropped)."""
    out = anchor[:, None].repeat(1, frames, 1, 1, 1)
    if end is not None:
        out[:, -1] = end
    return out


def motion_bucket(flow: torch.Tensor | None, width: int, scale: float, default: float = 32.0) -> float:
    """The motion-amount time id of a clip: scale * mean optical-flow magnitude (pixels/frame) / frame width, in [0, 255]."""
    if flow is None or flow.numel() == 0:
        return float(default)
    mag = flow.float().norm(dim=-1).mean().item()
    return float(min(255.0, max(0.0, scale * mag / max(width, 1))))


def clip_motion(frames: np.ndarray) -> float:
    """Mean absolute frame-to-frame change of a clip (uint8 [T, H, W, 3]), in grey levels: a cheap motion figure."""
    if len(frames) < 2:
        return 0.0
    f = frames.astype(np.float32)
    return float(np.abs(np.diff(f, axis=0)).mean())


def descriptor_inputs(encoder, texts: list[str], words: int) -> torch.Tensor:
    """[B, D] pooled descriptor embeddings, or with `words` K > 0 [B, 1 + K, D]: the pooled one, then the first K
    per-word states (I2VConditioning's descriptor_words). An empty text gives zeros: no descriptor."""
    pooled = encoder.encode([t or " " for t in texts]).embeddings.float()
    if words:
        pooled = torch.cat([pooled[:, None], encoder.encode_words([t or " " for t in texts], words)], dim=1)
    empty = torch.tensor([not t for t in texts])
    if bool(empty.any()):
        pooled[empty] = 0
    return pooled
