"""A character's own reference frames in AR training: sequences where reading them is the only way to the right look.

A story's `characters[].references:` reach the planner inside that character's sheet entry (ar/embed.py). Frames
that always agree with the description teach the model nothing the text did not say — the story-level references
were measured to change nothing for that reason (docs/ar.md). So in a share of the sequences
(`options.character_references_p`) one character of the episode gets `options.character_references` frames —
portraits the toy world renders: the character alone, standing, close or medium, in a random setting — in one of
three modes (`options.character_modes`, their weights):

- **agree**: the portraits show the look the description gives (so references are not always a contradiction);
- **restyle**: the portraits and the episode's keyframes show the character in other clothes, another clothes colour
  or another hat, while the description keeps the old ones: only the references say what it wears now;
- **vague**: the description is cut to the character's kind ("a robot"): only the references say the rest.

The face is never changed (the sheet's face embeddings come from the episode's crops), so a restyle touches what a
face pack cannot see. Toy-world episodes only: the keyframes are re-rendered from the episode's script
(ar_restyle.Restyler).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from moviedreamer.toyworld.world import ATTRIBUTES, SCENE_IDS, Character, ShotParams, character

MODES = ("agree", "restyle", "vague")
RESTYLED = ("clothes_colour", "clothes", "hat")  # what a face pack cannot see
KIND_WORDS = {"girl": "a girl", "boy": "a boy", "robot": "a robot", "cat": "a cat"}


@dataclass(frozen=True)
class CharacterReferenceDraw:
    """One character's references in one sequence."""

    story_id: str  # its id in the episode's script
    world_id: str  # its toy-world id (what the script's description reads as)
    look: Character  # what the portraits draw (and, restyled, the keyframes)
    mode: str
    portraits: tuple[ShotParams, ...]

    @property
    def looks(self) -> dict[str, Character]:
        """The renderer's look override for this draw (render.render_frame `looks`)."""
        return {self.world_id: self.look}

    def description(self, written: str) -> str:
        """The sheet's description of the character in this mode."""
        return KIND_WORDS[self.look.kind] if self.mode == "vague" else written


def changed_look(look: Character, rng) -> Character:
    """The look with one or two of clothes colour / clothes / hat changed to another value."""
    keys = list(RESTYLED)
    chosen = rng.choice(len(keys), size=int(rng.integers(1, 3)), replace=False)
    changes = {}
    for i in chosen:
        key = keys[int(i)]
        options = [v for v in ATTRIBUTES[key] if v != getattr(look, key)]
        changes[key] = str(options[int(rng.integers(len(options)))])
    return dataclasses.replace(look, **changes)


def portrait(world_id: str, rng) -> ShotParams:
    """A reference frame's shot: the character alone, standing, close or medium, in a random setting."""
    return ShotParams(str(SCENE_IDS[int(rng.integers(len(SCENE_IDS)))]), (world_id,), "stand", None,
                      ("close", "medium")[int(rng.integers(2))], "static", 1.0, int(rng.integers(1 << 30)))


def story_to_world_ids(story, params: list[ShotParams]) -> dict[str, str]:
    """Script id -> toy-world id of every character that appears in a shot (shots and their parameters in order)."""
    out: dict[str, str] = {}
    for (_, _, _, shot), p in zip(story.shots(), params):
        out.update(zip(shot.characters, p.characters))
    return out


def draw_character_references(story, params: list[ShotParams], rng, count: int, weights: dict[str, float]) -> CharacterReferenceDraw | None:
    """A character that appears in the episode, a mode by `weights`, and `count` portraits; None when no shot shows
    a character."""
    ids = story_to_world_ids(story, params)
    if not ids:
        return None
    story_id = sorted(ids)[int(rng.integers(len(ids)))]
    modes = [m for m in MODES if weights.get(m, 0) > 0]
    p = np.array([weights[m] for m in modes], dtype=float)
    mode = modes[int(rng.choice(len(modes), p=p / p.sum()))]
    look = character(ids[story_id])
    if mode == "restyle":
        look = changed_look(look, rng)
    return CharacterReferenceDraw(story_id, ids[story_id], look, mode, tuple(portrait(ids[story_id], rng) for _ in range(count)))


def check_modes(weights: dict[str, float]) -> dict[str, float]:
    """options.character_modes: weights of known modes, not all zero (ValueError otherwise)."""
    bad = sorted(set(weights) - set(MODES))
    if bad or any(v < 0 for v in weights.values()) or not any(v > 0 for v in weights.values()):
        raise ValueError(f"character_modes: expected non-negative weights of {', '.join(MODES)}, some above 0; found {weights}")
    return weights


def with_description(story, story_id: str, description: str):
    """The story with one character's description replaced (the sheet the sequence is built from)."""
    chars = [c.model_copy(update={"description": description}) if c.id == story_id else c for c in story.characters]
    return story.model_copy(update={"characters": chars})


def portrait_frames(draw: CharacterReferenceDraw, size: tuple[int, int], fps: int) -> torch.Tensor:
    """uint8 [R, H, W, 3]: the draw's portraits, rendered in its look."""
    from moviedreamer.toyworld.render import render_frame

    return torch.from_numpy(np.stack([render_frame(p, 0, fps, size, looks=draw.looks).image for p in draw.portraits]))
