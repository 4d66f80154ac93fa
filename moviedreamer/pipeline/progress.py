"""The clip stage's progress, counted in denoising work (video/work.py) rather than in movie-seconds.

A shot's first segment may draw several candidates and a guided segment runs two UNet rows per step, so a
movie-second costs very different times from one segment to the next and an ETA counted in movie-seconds swings.
Here the bar counts units of work as the sampler reports them, step by step. Its total is an expectation: the work
done so far plus the plan of what is left, where a reranked segment still to come is expected to draw as many
candidates as the reranked segments so far did on average, and the one being sampled, once k of its candidates have
failed, as many as those of the segments so far that needed more than k (each mean with a prior worth one segment:
half-way between the least and the most it can still draw). Renderers that do not report work (test doubles) are
counted in frames.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable

from tqdm.auto import tqdm

from moviedreamer.video.work import SegmentWork

SMOOTHING = 0.05  # tqdm's moving average of the rate: the last ~20 refreshes, not the last 3 (tqdm's default 0.3)


@dataclass(frozen=True)
class ClipProgress:
    """Where the clip stage stands, handed to a pipeline call's `callback` after every step and every frame.

    Args:
        done: units of work done (video/work.py: one unit = one denoising step of a full-length unguided segment).
        total: `done` plus the expected work still to do (it moves as reranked segments finish early or late).
        frames_done: frames written so far.
        frames_total: frames the stage writes in all.
        shot: index (movie order) of the shot being rendered.
        time: `time.perf_counter()` when this was reported.
    """

    done: float
    total: float
    frames_done: int
    frames_total: int
    shot: int
    time: float


class ClipWorkBar:
    """The progress bar of the clip stage (a `video.work.WorkMeter` for the shot being rendered).

    Args:
        plans: per shot to render, in order: (shot index, its segments' `SegmentWork`).
        frames_total: frames to write in all.
        quiet: no bar drawn (the callback still runs).
        callback: called with a `ClipProgress` after every unit of progress.
    """

    def __init__(self, plans: list[tuple[int, list[SegmentWork]]], frames_total: int, quiet: bool = False,
                 callback: Callable[[ClipProgress], None] | None = None):
        self.segments = deque(seg for _, segs in plans for seg in segs)
        self.shots = deque(i for i, _ in plans)
        self.left: dict[int, float] = {}  # tries → cost of one candidate, summed over the segments not yet done
        for seg in self.segments:
            self.left[seg.tries] = self.left.get(seg.tries, 0.0) + seg.cost
        self.done, self.head_done, self.frames_done, self.frames_total = 0.0, 0.0, 0, frames_total
        self.observed: Counter[int] = Counter()  # candidates drawn → reranked segments done that drew that many
        self.callback = callback
        self.bar = tqdm(total=self.total(), desc="render clips", unit="step", disable=quiet, dynamic_ncols=True, smoothing=SMOOTHING,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit}s [{elapsed}<{remaining}]")
        self._report()  # the stage starts

    # --- expectation --------------------------------------------------------------------------------------------
    def expected_tries(self, tries: int, failed: int = 0) -> float:
        """Candidates a segment that draws up to `tries` is expected to draw in all, `failed` of them already drawn and
        not kept: the mean of the segments so far that drew more than `failed`, with a prior worth one segment at
        half-way between `failed` + 1 and `tries`."""
        if tries <= 1:
            return 1.0
        seen = [(n, count) for n, count in self.observed.items() if n > failed]
        mean = (sum(n * count for n, count in seen) + (failed + 1 + tries) / 2) / (sum(count for _, count in seen) + 1)
        return min(float(tries), max(failed + 1.0, mean))

    def total(self) -> float:
        left = sum(cost * self.expected_tries(tries) for tries, cost in self.left.items())
        if self.segments:  # the segment being sampled: what is left of it, knowing how many candidates it has drawn
            head = self.segments[0]
            failed = max(0, math.ceil(self.head_done / head.cost - 1e-9) - 1) if head.tries > 1 and head.cost > 0 else 0
            left += max(0.0, head.cost * self.expected_tries(head.tries, failed) - self.head_done) - head.cost * self.expected_tries(head.tries)
        return self.done + max(0.0, left)

    # --- WorkMeter ----------------------------------------------------------------------------------------------
    def advance(self, units: float) -> None:
        self.done += units
        self.head_done += units
        self._show(units)

    def segment_done(self, tried: int) -> None:
        seg = self.segments.popleft() if self.segments else SegmentWork(0.0)
        if seg.tries in self.left:
            self.left[seg.tries] -= seg.cost
        if seg.tries > 1:
            self.observed[tried] += 1
        self.head_done = 0.0
        self._show(0.0)

    # --- shots and frames ---------------------------------------------------------------------------------------
    def frame(self) -> None:
        """A frame was written."""
        self.frames_done += 1
        self._report()

    def shot_done(self) -> None:
        if self.shots:
            self.shots.popleft()

    def close(self) -> None:
        self.bar.close()

    def _show(self, units: float) -> None:
        self.bar.total = self.total()
        self.bar.update(units)
        self._report()

    def _report(self) -> None:
        if self.callback is not None:
            self.callback(ClipProgress(self.done, self.total(), self.frames_done, self.frames_total,
                                       self.shots[0] if self.shots else -1, time.perf_counter()))
