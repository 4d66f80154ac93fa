"""The keyframe tokenizer as the pipeline's `KeyframeRenderer` (moviedreamer/pipeline/components.py), and the one
definition of what the decoder attends to for a shot, shared by training and inference.

Descriptor slots of a shot, in this order (slot k always has the same role; an empty text is an absent slot):

    [scene setting, shot action, shot camera, story style, description of each character in the shot ...]

Face slots: one per character of the shot, in the shot's order (a character without a face: an absent slot).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from moviedreamer.errors import UserError

FIXED_SLOTS = ("setting", "action", "camera", "style")


@dataclass
class KeyframeCondition:
    """What the decoder attends to besides the tokens: descriptor embeddings [Nd, Dd] and face embeddings [Nf, Df]
    (all-zero rows = absent slots); either may be None. `characters`: how many characters the shot shows, `cast`:
    the description embeddings [M, Dd] of every character of the story (both for reranking; None = unknown)."""

    descriptors: torch.Tensor | None = None
    faces: torch.Tensor | None = None
    characters: int | None = None
    cast: torch.Tensor | None = None


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
        word = "right" if m.group(1).lower() == "left" else "left"
        return word.capitalize() if m.group(1)[0].isupper() else word

    return _LR.sub(swap, text)


def read_story(path: str | Path):
    """A shard episode's script (.yaml), read for its texts only: a namespace with `characters`, `style` and
    `shots()` → (0, 0, scene, shot) like `Story.shots()`. Shards are validated when written; this reader also
    takes small synthetic frames that the user-facing resolution bound would refuse."""
    from types import SimpleNamespace as NS

    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        chars = [NS(id=str(c["id"]), description=str(c.get("description", ""))) for c in raw.get("characters") or []]
        scenes = [(NS(setting=str(sc.get("setting", ""))), [NS(action=str(sh.get("action", "")), camera=str(sh.get("camera", "")),
                                                               characters=[str(x) for x in sh.get("characters") or []]) for sh in sc.get("shots") or []])
                  for sc in raw.get("scenes") or []]
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: expected the episode's script in the story format, found: {str(e).splitlines()[0][:200]}") from None
    return NS(characters=chars, style=raw.get("style"), shots=lambda: [(0, 0, sc, sh) for sc, shots in scenes for sh in shots])


def embed_texts(descriptor_encoder, texts: list[str]) -> torch.Tensor:
    """Descriptor texts → [N, D]; empty texts give zero rows (absent slots)."""
    out = torch.zeros(len(texts), descriptor_encoder.embed_dim)
    idx = [i for i, t in enumerate(texts) if t]
    if idx:
        out[idx] = descriptor_encoder.encode([texts[i] for i in idx]).embeddings.float()
    return out


def as_condition(condition) -> KeyframeCondition:
    if condition is None:
        return KeyframeCondition()
    if isinstance(condition, KeyframeCondition):
        return condition
    if isinstance(condition, dict):
        unknown = set(condition) - {"descriptors", "faces", "characters", "cast"}
        if unknown:
            raise UserError(f"keyframe condition: unknown keys {sorted(unknown)}; expected descriptors, faces, characters and cast")
        return KeyframeCondition(condition.get("descriptors"), condition.get("faces"), condition.get("characters"), condition.get("cast"))
    raise UserError(f"keyframe condition: expected a KeyframeCondition (descriptor and face embeddings), found {type(condition).__name__}")


class TokenizerRenderer:
    """`render(tokens [n, d], condition, seed, (width, height)) -> uint8 [H, W, 3]`, the pipeline's KeyframeRenderer.

    With a `scorer` (rerank.IdentityScorer) and more than one candidate (the decoder config's `candidates`, or the
    argument), a shot with faces or a character count is decoded up to that many times and the candidate whose faces
    best match them kept (rerank.py): by face, and where the scorer has a look check, by the body under each face
    against the character's description among the story's cast."""

    def __init__(self, tokenizer, steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
                 scorer=None, candidates: int | None = None, accept: float | None = None):
        self.tokenizer, self.steps, self.guidance, self.sampler = tokenizer, steps, guidance, sampler
        c = tokenizer.decoder.config
        self.candidates = int(c.candidates if candidates is None else candidates) if scorer is not None else 1
        self.accept = float(c.accept if accept is None else accept)
        self.scorer = scorer
        self.last = None  # the last render's rerank.Reranked (tried, picked, score): for progress and tests

    @property
    def fingerprint(self) -> str:
        fp = f"{self.tokenizer.fingerprint}:{self.steps}:{self.guidance}:{self.sampler}"
        if self.candidates > 1:
            fp += f":rerank{self.candidates}:{self.accept}:{self.scorer.fingerprint}"
        return fp

    def render(self, tokens, condition, seed: int, size: tuple[int, int]) -> np.ndarray:
        from moviedreamer.tokenizer.rerank import decode_reranked

        c = as_condition(condition)
        tokens = torch.as_tensor(tokens).float()
        if tokens.dim() == 2:
            tokens = tokens[None]
        desc = None if c.descriptors is None else [torch.as_tensor(c.descriptors).float()]
        faces = None if c.faces is None else [torch.as_tensor(c.faces).float()]
        self.last = decode_reranked(self.tokenizer, self.scorer, tokens, desc, faces, seed=int(seed), candidates=self.candidates,
                                    accept=self.accept, characters=[c.characters], cast=[c.cast], steps=self.steps, guidance=self.guidance,
                                    size=tuple(size), sampler=self.sampler)
        return (self.last.images[0].permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
