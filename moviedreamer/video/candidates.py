"""Best-of-N segments for the clip sampler: keep the sampled segment whose frames still show the keyframe's characters.

A segment is sampled up to `candidates` times (I2VSettings.candidates; only in the shot's first `candidate_segments`
segments) and the candidate kept whose decoded frames the reranker (moviedreamer/rerank/segments.py) scores best,
plus `presence_weight` x the presence check's term and less `motion_weight` x how far its motion is from the motion
prior's expectation; the first candidate reaching `accept` is kept without trying more. Candidate 0 draws the
segment's own noise, so with one candidate the clip is exactly the plain sample. The sampler itself stays a diffusion
loop: it asks `choose(segment, sample)` for each segment and never sees the candidates.
"""

from __future__ import annotations

from typing import Callable

import torch

from moviedreamer.metrics import motion_magnitude
from moviedreamer.rerank.best_of import best_of
from moviedreamer.video.conditioning import decode_latents, to_uint8
from moviedreamer.video.motion_prior import log_distance

Sample = Callable[[int], torch.Tensor]  # candidate k → scaled latents [L, C, h, w]


class SegmentPicker:
    """Best-of-N segments with a reranker (`scorer`: a rerank.SegmentScorer), the VAE to decode candidates and the
    model's motion prior (or None)."""

    def __init__(self, scorer, vae, motion_prior=None):
        self.scorer, self.vae, self.motion_prior = scorer, vae, motion_prior

    @property
    def fingerprint(self) -> str:
        return self.scorer.fingerprint

    def for_shot(self, keyframe_pixels: torch.Tensor, condition, settings, expected: float | None) -> Callable[[int, Sample], torch.Tensor]:
        """`choose(segment, sample)` for one shot: its keyframe (pixels [1, 3, H, W] in [-1, 1]) is read for faces
        once, on the first segment that draws more than one candidate."""
        s, reference = settings, None

        def score(raw: torch.Tensor) -> float:
            pictures = to_uint8(decode_latents(self.vae, raw, s.decode_chunk))
            value = self.scorer.score(pictures, reference)
            if s.presence_weight:
                value += s.presence_weight * self.scorer.presence_term(pictures, condition.looks, condition.cast)
            if s.motion_weight and expected is not None:
                measured = motion_magnitude(pictures) * self.motion_prior.config.width / pictures.shape[2]
                value -= s.motion_weight * log_distance(measured, expected, self.motion_prior.config.offset)
            return value

        def choose(segment: int, sample: Sample) -> torch.Tensor:
            nonlocal reference
            tries = s.candidates if s.reranks(segment) else 1
            if tries > 1 and reference is None:
                reference = self.scorer.reference(to_uint8(keyframe_pixels)[0])
            return best_of(sample, score, tries, s.accept).value

        return choose


def plain(segment: int, sample: Sample) -> torch.Tensor:
    """No reranking: every segment is its own noise's sample."""
    return sample(0)

