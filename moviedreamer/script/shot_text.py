"""What each stage reads of a shot, written once for training and inference alike.

Descriptor slots of a shot, in this order (slot k always has the same role; an empty text is an absent slot):

    [scene setting, shot action, shot camera, story style, description of each character in the shot ...]

The clip model reads the shot's own phrases through a template ("{action}. {camera}"), in training from each
episode's script exactly as the pipeline writes them at inference: with bare parameter names ("run. wide") a model
cannot know which way the background of a run scrolls. A frame flipped left-right flips its words too.
"""

from __future__ import annotations

import re
from pathlib import Path

from moviedreamer.script.load import load_story

FIXED_SLOTS = ("setting", "action", "camera", "style")


def shot_descriptor_texts(setting: str, action: str, camera: str, style: str | None, character_descriptions: list[str]) -> list[str]:
    return [setting or "", action or "", camera or "", style or "", *[d or "" for d in character_descriptions]]


def story_shot_texts(story, scene, shot, swap=None) -> list[str]:
    """The descriptor texts of one shot of a `Story` (`swap`: a text transform, e.g. left/right for a mirrored frame)."""
    fix = swap or (lambda t: t)
    chars = {c.id: c.description for c in story.characters}
    return shot_descriptor_texts(scene.setting, fix(shot.action), fix(shot.camera), story.style, [chars.get(c, "") for c in shot.characters])


_LR = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def swap_left_right(text: str) -> str:
    """The script of a mirrored keyframe or clip: 'runs to the right' → 'runs to the left' ('Left' → 'Right')."""

    def swap(m: re.Match) -> str:
        found = m.group(1)
        word = "right" if found.lower() == "left" else "left"
        return word.upper() if found.isupper() else word.capitalize() if found[0].isupper() else word

    return _LR.sub(swap, text)


def script_shot_texts(path: Path, template: str) -> list[str] | None:
    """The template filled with each shot's `action` and `camera` of an episode's script, in shot order; None when
    the episode has no script beside it."""
    if not path.is_file():
        return None
    return [template.format(action=shot.action, camera=shot.camera) for *_, shot in load_episode_story(path).shots()]


def load_episode_story(path: str | Path):
    """A training shard's episode script (.yaml beside its frames), read by the one story reader. Shards were
    validated when written; the files a script names are not looked up again."""
    return load_story(path, check_files=False).story
