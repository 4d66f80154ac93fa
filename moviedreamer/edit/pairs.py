"""Toy-world edit pairs: the same shot rendered before and after one change, so the target of every training pair is
exact (no generated targets, unlike InstructPix2Pix's data), and the pair differs only where the change is.

A scene change keeps every character where it was: the camera frames the characters' feet, whatever the horizon, so
only the background changes. A clothes or hat change draws the characters it names (a kind, or everyone; with a
garment, only those wearing it) with that attribute changed and the same id, so layout and motion are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moviedreamer.edit.instructions import KINDS, EditChange, write_instruction
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import (
    CHARACTER_IDS,
    COLOURS,
    HATS,
    SCENE_IDS,
    ShotParams,
    character,
    random_cast,
)


@dataclass
class EditPair:
    source: np.ndarray  # uint8 [H, W, 3]: the frame as it was
    target: np.ndarray  # uint8 [H, W, 3]: the same frame after the change
    instruction: str
    change: EditChange
    params: ShotParams
    frame: int


def targets(params: ShotParams, change: EditChange) -> list[str]:
    """The characters of the shot a clothes or hat change is about (none for a scene change)."""
    if change.kind == "scene":
        return []
    out = []
    for cid in params.characters:
        c = character(cid)
        if (change.who is None or c.kind == change.who) and (change.garment is None or c.clothes == change.garment):
            out.append(cid)
    return out


def apply_change(params: ShotParams, change: EditChange) -> tuple[ShotParams, dict]:
    """(shot parameters, looks for render_frame) after the change."""
    if change.kind == "scene":
        return replace(params, scene=change.value), {}
    field = "clothes_colour" if change.kind == "clothes_colour" else "hat"
    return params, {cid: replace(character(cid), **{field: change.value}) for cid in targets(params, change)}


def changes_anything(params: ShotParams, change: EditChange) -> bool:
    if change.kind == "scene":
        return change.value != params.scene
    field = "clothes_colour" if change.kind == "clothes_colour" else "hat"
    return any(getattr(character(c), field) != change.value for c in targets(params, change))


def render_pair(params: ShotParams, change: EditChange, frame: int, size: int = 128, fps: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(before, after) uint8 frames of `frame` of the shot."""
    after_params, after_looks = apply_change(params, change)
    before = render_frame(params, frame, fps, (size, size)).image
    after = render_frame(after_params, frame, fps, (size, size), looks=after_looks or None).image
    return before, after


def random_change(params: ShotParams, rng: np.random.Generator, weights=(1.0, 1.0, 1.0)) -> EditChange:
    """A change that alters the shot: its kind drawn by `weights` (scene, clothes colour, hat); a character change names
    the kind of one of the shot's characters half the time (else everyone), and sometimes its garment."""
    p = np.asarray(weights, float) / float(np.sum(weights))
    while True:
        kind = KINDS[int(rng.choice(len(KINDS), p=p))]
        if kind == "scene":
            change = EditChange("scene", str(rng.choice([s for s in SCENE_IDS if s != params.scene])))
        else:
            c = character(str(rng.choice(list(params.characters))))
            who = c.kind if rng.random() < 0.5 else None
            if kind == "clothes_colour":
                garment = c.clothes if rng.random() < 0.5 else None
                change = EditChange(kind, str(rng.choice([x for x in COLOURS if x != c.clothes_colour])), who, garment)
            else:
                change = EditChange(kind, str(rng.choice([h for h in HATS if h != c.hat])), who)
        if changes_anything(params, change):
            return change


def random_pair(rng: np.random.Generator, size: int = 128, composed: float = 0.5, weights=(1.0, 1.0, 1.0), fps: int = 8) -> EditPair:
    """A random shot at a random frame, before and after a random change, with a templated instruction."""
    scene = str(rng.choice(SCENE_IDS))
    duration = float(rng.integers(3, 7))
    cast = random_cast(rng, 3) if rng.random() < composed else CHARACTER_IDS
    params = random_shot(rng, scene, cast, duration, layout_seed=int(rng.integers(2**31)))
    frame = int(rng.integers(0, int(duration * fps)))
    change = random_change(params, rng, weights)
    source, target = render_pair(params, change, frame, size, fps)
    return EditPair(source, target, write_instruction(change, rng), change, params, frame)


__all__ = ["EditPair", "apply_change", "changes_anything", "random_change", "random_pair", "render_pair", "targets"]
