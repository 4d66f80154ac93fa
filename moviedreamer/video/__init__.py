"""Anchored image-to-video: a shot's keyframe becomes a clip of the shot's duration.

    model.py         AnchoredI2V: diffusers UNetSpatioTemporalConditionModel + conditioning projections,
                     from_pretrained / save_pretrained, from_svd (an SVD-XT diffusers folder)
    conditioning.py  concatenated latents (+ end frame), time ids, pixel <-> latent helpers, ClipCondition
    sampler.py       AnchoredSampler (segments anchored on the keyframe, overlap blending, end frame for the
                     first tau steps), I2VClipRenderer (the pipeline's ClipRenderer)
    candidates.py    SegmentPicker: best-of-N segments with a reranker (moviedreamer/rerank/)
    work.py          a shot's denoising work per segment, for progress counted in work (pipeline/progress.py)

Training: moviedreamer/train/stages/i2v.py (`moviedreamer train i2v`). Design and figures: docs/video.md.
Submodules import torch and diffusers; importing this package is cheap.
"""

from __future__ import annotations

from moviedreamer.video import model, sampler
from moviedreamer.video.conditioning import ClipCondition

__all__ = ["AnchoredI2V", "I2VSettings", "AnchoredSampler", "I2VClipRenderer", "ClipCondition"]


def __getattr__(name):
    if name in ("AnchoredI2V", "I2VSettings"):
        return getattr(model, name)
    if name in ("AnchoredSampler", "I2VClipRenderer"):
        return getattr(sampler, name)
    if name == "ClipCondition":
        return ClipCondition
    raise AttributeError(name)
