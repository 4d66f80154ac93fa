"""What a pipeline call returns: the output folder's paths and what was rendered, with the frames read back from disk
on demand (one shot at a time), so that an hour-long movie never sits in memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from moviedreamer.media import read_frames


@dataclass
class RunReport:
    """What a run rendered and what it reused from an earlier run in the same folder.

    Args:
        out_dir: the output folder.
        rendered: unit kind ("plan", "keyframe", "clip") → indices (movie order) of the shots rendered by this run.
        reused: unit kind → how many units were found in the folder and reused.
        seconds: (unit kind, shot index) → seconds this run spent rendering that unit.
    """

    out_dir: Path
    rendered: dict[str, list[int]] = field(default_factory=lambda: {"plan": [], "keyframe": [], "clip": []})
    reused: dict[str, int] = field(default_factory=lambda: {"plan": 0, "keyframe": 0, "clip": 0})
    seconds: dict[tuple[str, int], float] = field(default_factory=dict)


@dataclass
class MovieResult(RunReport):
    """The movie a `MovieDreamerPipeline` call made: paths into the output folder, and frames read back lazily.

    Args:
        shot_indices: indices (movie order) of the shots this call made, in order.
        keyframes: each shot's keyframe (PNG), in the same order.
        clips: each shot's clip (`shots/shot-NNNNN.mp4`); empty with `keyframes_only`.
        movie: `movie.mp4`, or None with `keyframes_only`.
        storyboard: `storyboard.png` and its further pages (`storyboard-002.png` …, 48 shots a page).
        manifest: `manifest.json` (profile, fingerprints, seeds, per-shot timings and paths).
        fps: frames per second of the clips.
        preview: True for a run of part of the story or of its keyframes only: its movie, storyboard and manifest are
            in `OUT/preview/`, and the folder's own movie (if any) was left as it was.
    """

    shot_indices: list[int] = field(default_factory=list)
    keyframes: list[Path] = field(default_factory=list)
    clips: list[Path] = field(default_factory=list)
    movie: Path | None = None
    storyboard: list[Path] = field(default_factory=list)
    manifest: Path | None = None
    fps: int = 8
    preview: bool = False

    def __len__(self) -> int:
        return len(self.shot_indices)

    def keyframe(self, i: int) -> np.ndarray:
        """The keyframe of the result's i-th shot.

        Returns:
            `np.ndarray` uint8 [height, width, 3].
        """
        with Image.open(self.keyframes[i]) as im:
            return np.asarray(im.convert("RGB"))

    def frames(self, i: int) -> np.ndarray:
        """The frames of the result's i-th shot, decoded from its clip (only this shot is held in memory).

        Returns:
            `np.ndarray` uint8 [frames, height, width, 3].
        """
        if not self.clips:
            raise ValueError("this result has no clips (it was made with keyframes_only=True): use keyframe(i)")
        return np.stack(list(read_frames(self.clips[i])))

    def iter_frames(self) -> Iterator[np.ndarray]:
        """Every frame of `movie.mp4` in order (uint8 [height, width, 3]), decoded one at a time."""
        if self.movie is None:
            raise ValueError("this result has no movie (it was made with keyframes_only=True)")
        yield from read_frames(self.movie)
