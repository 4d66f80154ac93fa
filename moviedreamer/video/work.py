"""How a clip is cut into segments (`plan_segments`) and how much denoising it takes, so that progress is counted in
work done rather than in movie-seconds.

The clip sampler's cost is its UNet passes: every segment of a shot runs `steps` denoising steps, each one UNet batch
of the segment's frames (twice or three times as many rows in a guided segment), and a reranked segment may draw up
to `candidates` samples. One unit of work is one denoising step of a full-length, unguided segment; a segment of L
of `num_frames` frames, guided with R rows, costs `steps × R × L / num_frames` units per candidate. How many
candidates a reranked segment really draws is known only when it is done (the first one that scores `accept` is
kept), so a shot's work is a plan — `SegmentWork(cost, tries)` per segment — and the sampler reports what it did
through a `WorkMeter`: each step's units as it finishes, and each segment's number of candidates drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from moviedreamer.errors import UserError


def plan_segments(n_frames: int, seg_len: int, overlap: int) -> list[tuple[int, int]]:
    """[(first frame, length)] covering n_frames; consecutive segments share `overlap` frames; the last may be shorter."""
    if n_frames < 1:
        raise UserError(f"i2v: a clip needs at least 1 frame, asked for {n_frames}")
    if not 1 <= overlap < seg_len:
        raise UserError(f"i2v: overlap must be in [1, segment length - 1] = [1, {seg_len - 1}], found {overlap}")
    plans = [(0, min(seg_len, n_frames))]
    while plans[-1][0] + plans[-1][1] < n_frames:
        start = plans[-1][0] + plans[-1][1] - overlap
        plans.append((start, min(seg_len, n_frames - start)))
    return plans


@dataclass(frozen=True)
class SegmentWork:
    """The denoising work of one segment of a shot.

    Args:
        cost: units of work of one candidate (1 = one step of a full-length unguided segment).
        tries: candidates the segment draws at most (1: not reranked).
    """

    cost: float
    tries: int = 1


class WorkMeter(Protocol):
    """What the clip sampler reports while it renders (pipeline/progress.py turns it into the progress bar)."""

    def advance(self, units: float) -> None:
        """`units` of work were just done (one denoising step)."""

    def segment_done(self, tried: int) -> None:
        """The current segment is final after drawing `tried` candidates."""


def guidance_rows(settings, segment: int) -> int:
    """UNet rows per step of a shot's segment `segment`: 1 unguided, 2 with classifier-free guidance, 3 with action
    guidance too (video/sampler.py, `sample_segment`)."""
    if not settings.guides(segment):
        return 1
    return 3 if settings.action_guidance is not None else 2


CLONE_ROWS = 3  # a MotionClone step's extra UNet forward and backward (video/motion_clone.py), in rows


def step_units(settings, segment: int, length: int, cloned: bool = False) -> float:
    """Units of work of one (average) denoising step of a segment of `length` frames: Inner-Guidance's extra row
    (video/guidance.py) runs in its share of the steps, a motion reference's guidance (`cloned`) in its own."""
    inner = settings.inner_guidance_share if settings.flow_channels and settings.inner_guidance > 0 else 0.0
    clone = CLONE_ROWS * settings.clone_share if cloned and settings.clone_weight > 0 else 0.0
    return (guidance_rows(settings, segment) + inner + clone) * length / settings.num_frames


def shot_work(settings, segments: list[tuple[int, int]], cloned: bool = False, skipped: int = 0) -> list[SegmentWork]:
    """The plan of a shot cut into `segments` ([(first frame, length)], `plan_segments`); `cloned`:
    the shot has a motion reference; `skipped`: steps of the schedule each segment skips (`start_sigma`)."""
    return [SegmentWork((settings.steps - skipped) * step_units(settings, n, length, cloned), settings.candidates if settings.reranks(n) else 1)
            for n, (_, length) in enumerate(segments)]
