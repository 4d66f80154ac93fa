"""Restyled references for the AR stage: teach the planner that reference frames override the written look.

Few-shot personalization inserts ~10 encoded frames of a story after the character sheet. When those frames always
agree with the descriptions (as plain toy-world episodes do), the model learns nothing from them that the text did
not already say, and a user's references of a character in new clothes change nothing (docs/ar.md). So in a fraction of the sequences that get references (`options.restyle_p`), one character of the episode is
re-rendered with clothes of another colour in every keyframe and every reference frame, while its written
description keeps the old colour: the only way to predict its new look is to read it from the references.

Toy-world episodes only: the shots are re-rendered from the episode's own script (its YAML, read back by the toy
grammar), which reproduces the stored keyframes exactly when nothing is restyled.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from moviedreamer.ar.tokens import encode_frames
from moviedreamer.errors import UserError
from moviedreamer.script import load_story
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import read_story_params
from moviedreamer.toyworld.world import CHARACTER_BY_ID, COLOURS


def draw_restyle(story, rng) -> tuple[str, str] | None:
    """(character id, new clothes colour): a catalogue character that appears in the episode, a colour it does not
    wear; None when no shot shows one."""
    ids = sorted({c for _, _, _, shot in story.shots() for c in shot.characters if c in CHARACTER_BY_ID})
    if not ids:
        return None
    cid = ids[int(rng.integers(len(ids)))]
    colours = [c for c in COLOURS if c != CHARACTER_BY_ID[cid].clothes_colour]
    return cid, colours[int(rng.integers(len(colours)))]


class Restyler:
    """Renders an episode's keyframes / reference frames with one character restyled, encoded to keyframe tokens."""

    def __init__(self, yaml_path, tokens):
        self.yaml_path, self.tokens = yaml_path, tokens  # episode index -> its YAML; the stage's TokenSource
        self._params: dict = {}

    def shot_params(self, episode: dict) -> tuple[list, int]:
        ep = episode["meta"]["id"]
        if ep not in self._params:
            path = self.yaml_path(episode["index"])
            try:
                loaded = load_story(path)
                self._params = {ep: (read_story_params(loaded), loaded.story.fps)}  # the last episode only: they come one by one
            except Exception as e:  # a script the toy grammar cannot read: not a toy-world episode
                raise UserError(f"{path}: options.restyle_p needs toy-world episodes (their scripts re-render the shots); "
                                f"this one could not be read back ({str(e).splitlines()[0][:160]})") from None
        return self._params[ep]

    def frames(self, episode: dict, restyle: tuple[str, str] | dict, picks: list[tuple[int, int]]) -> torch.Tensor:
        """uint8 [N, H, W, 3]: frame t of shot s for each (s, t) in picks, the character in its new clothes. restyle:
        (catalogue id, clothes colour), or a renderer look override {toy-world id: Character} (ar_references.py)."""
        if isinstance(restyle, dict):
            looks = restyle
        else:
            cid, colour = restyle
            looks = {cid: dataclasses.replace(CHARACTER_BY_ID[cid], clothes_colour=colour)} if cid in CHARACTER_BY_ID else {}
        params, fps = self.shot_params(episode)
        h, w = episode["keyframes"].shape[1:3]
        if len(params) < max(s for s, _ in picks) + 1:
            raise UserError(f"episode {episode['meta']['id']}: its script has {len(params)} toy-world shots, the shard {len(episode['keyframes'])} keyframes")
        return torch.from_numpy(np.stack([render_frame(params[s], t, fps, (w, h), looks=looks).image for s, t in picks]))

    def keyframe_tokens(self, episode: dict, restyle: tuple[str, str] | dict, flip: bool = False) -> torch.Tensor:
        picks = [(s, 0) for s in range(len(episode["keyframes"]))]  # a keyframe is its shot's first frame
        self.tokens.encoded += len(picks)
        return encode_frames(self.tokens.tokenizer, self.frames(episode, restyle, picks), flip)

    def reference_tokens(self, episode: dict, restyle: tuple[str, str] | dict, picks: list[tuple[int, int]], flip: bool,
                         keyframe_tokens: torch.Tensor, from_clips: bool) -> torch.Tensor:
        """Like TokenSource.frames, from the restyled renders."""
        if not from_clips:
            return keyframe_tokens[torch.tensor([s for s, _ in picks], dtype=torch.long)]
        self.tokens.encoded += len(picks)
        return encode_frames(self.tokens.tokenizer, self.frames(episode, restyle, picks), flip)
