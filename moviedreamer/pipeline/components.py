"""What the pipeline needs from each stage, as small protocols. Stages stay independent of each other;
`moviedreamer.pipeline.profile` builds these from a checkpoints profile.

Every component has a `fingerprint` (a hash of its weights and settings) that enters the resume keys, so
that changing a model re-renders exactly the units it produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np


@dataclass
class EncodedStory:
    """The story after the encoders: whatever the planner and renderers need, per shot, in movie order.
    `sheet` and `shots` are opaque to the pipeline (they belong to the AR stage's embedding dataclasses);
    `keyframe_conditions[i]` is what the keyframe decoder attends to for shot i (descriptor/face embeddings)."""

    sheet: object
    shots: list
    references: object | None = None
    keyframe_conditions: list = field(default_factory=list)
    clip_conditions: list = field(default_factory=list)
    fingerprint: str = ""


class ScriptEncoder(Protocol):
    fingerprint: str

    def encode_story(self, loaded) -> EncodedStory: ...


class Planner(Protocol):
    """The AR model: `reset` pins the character sheet (and references); `step` plans one shot. With `tokens`
    given, the shot is teacher-forced into the context (used to resume from cached plans)."""

    fingerprint: str

    def reset(self, encoded: EncodedStory) -> None: ...

    def step(self, shot_index: int, seed: int, tokens=None): ...


class KeyframeRenderer(Protocol):
    fingerprint: str

    def render(self, tokens, condition, seed: int, size: tuple[int, int]) -> np.ndarray: ...


class ClipRenderer(Protocol):
    """Renders a shot's clip from its keyframe, frames streamed. A renderer that also has `work(n_frames)` (the plan of
    its denoising work, video/work.py) takes a `progress` meter in `render` and the clip stage's progress bar counts
    that work; one without it is counted in frames."""

    fingerprint: str

    def render(self, keyframe: np.ndarray, n_frames: int, condition, seed: int, fps: int, end_frame: np.ndarray | None = None,
               progress=None) -> Iterator[np.ndarray]: ...


@dataclass
class Components:
    encoder: ScriptEncoder
    planner: Planner
    keyframes: KeyframeRenderer
    clips: ClipRenderer
    profile: str = "toy"
    window: int = 0  # shots of history the planner attends to (0 = all); bounds resume teacher-forcing
    placement: object | None = None  # pipeline/placement.py Placement: `enter(stage)` before each stage (None: models stay put)
