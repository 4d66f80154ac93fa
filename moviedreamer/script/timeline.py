"""The shot timeline: where each shot sits in the movie, in frames, and the seed each shot draws from.

Seeds derive from (story seed, scene id, shot index in scene), so editing one shot or inserting a scene
does not change the randomness of unrelated shots.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from moviedreamer.script.models import Shot, Story


@dataclass(frozen=True)
class TimelineShot:
    index: int  # position in the whole movie
    scene_index: int
    scene_id: str
    shot_index: int  # position within its scene
    start_frame: int
    n_frames: int
    seed: int
    shot: Shot

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.n_frames


def shot_seed(story_seed: int, scene_id: str, shot_index: int) -> int:
    digest = hashlib.sha256(f"{story_seed}/{scene_id}/{shot_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def frames_for(duration: float, fps: int) -> int:
    """Frames of a shot: cumulative rounding would drift, so each shot rounds on its own (≥ 1 frame)."""
    return max(1, round(duration * fps))


def build_timeline(story: Story) -> list[TimelineShot]:
    timeline, frame = [], 0
    for index, (si, ti, scene, shot) in enumerate(story.shots()):
        n = frames_for(shot.duration, story.fps)
        timeline.append(TimelineShot(index, si, scene.id, ti, frame, n, shot_seed(story.seed, scene.id, ti), shot))
        frame += n
    return timeline
