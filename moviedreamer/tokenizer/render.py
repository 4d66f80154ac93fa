"""The keyframe tokenizer as the pipeline's `KeyframeRenderer` (moviedreamer/pipeline/components.py), with best-of-N
candidates scored by a reranker (moviedreamer/rerank/) handed to it.

The decoder attends to the shot's descriptor slots (moviedreamer/script/shot_text.py) and one face slot per character
of the shot, in the shot's order (a character without a face: an absent slot).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from moviedreamer.errors import UserError
from moviedreamer.rerank.identity import IdentityScorer, candidate_seed
from moviedreamer.script.shot_text import FIXED_SLOTS


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)


@dataclass
class KeyframeCondition:
    """What the decoder attends to besides the tokens: descriptor embeddings [Nd, Dd] and face embeddings [Nf, Df]
    (all-zero rows = absent slots); either may be None. `characters`: how many characters the shot shows, `cast`:
    the description embeddings [M, Dd] of every character of the story (both for reranking; None = unknown)."""

    descriptors: torch.Tensor | None = None
    faces: torch.Tensor | None = None
    characters: int | None = None
    cast: torch.Tensor | None = None


@dataclass
class Reranked:
    images: torch.Tensor  # [B, 3, H, W] in [0, 1], the best candidate of each keyframe
    scores: list[float]  # its identity score
    tried: list[int]  # candidates decoded for each keyframe
    picked: list[int]  # which candidate was kept (0 = the plain decode)


@torch.no_grad()
def decode_reranked(tokenizer, scorer: IdentityScorer, tokens, descriptors=None, faces=None, seed: int | list[int] = 0,
                    candidates: int = 4, accept: float = 0.9, characters: list | None = None, cast: list | None = None,
                    **decode_kwargs) -> Reranked:
    """`tokenizer.decode` with up to `candidates` tries per keyframe (rounds over the keyframes not yet accepted);
    `characters[i]`: how many characters keyframe i should show (None: unknown; only its faces are checked);
    `cast[i]`: [M, Dd] the description embeddings of every character of keyframe i's story (for the scorer's look
    check; the shot's own characters' descriptions are its descriptor slots after the fixed ones, moviedreamer/script/shot_text.py)."""
    if tokens.dim() == 2:
        tokens = tokens[None]
    b = tokens.shape[0]
    seeds = [int(seed) + i for i in range(b)] if isinstance(seed, int) else [int(s) for s in seed]
    row = lambda x, idx: None if x is None else [x[i] for i in idx]  # noqa: E731  (lists or batched tensors)
    face_rows = [None if faces is None else faces[i] for i in range(b)]
    look_rows = [None if descriptors is None or face_rows[i] is None
                 else descriptors[i][len(FIXED_SLOTS): len(FIXED_SLOTS) + len(face_rows[i])] for i in range(b)]
    casts = list(cast) if cast is not None else [None] * b
    counts = list(characters) if characters is not None else [None] * b
    best, scores, tried, picked = [None] * b, [float("-inf")] * b, [0] * b, [0] * b
    active = list(range(b))
    for k in range(max(1, int(candidates))):
        if not active:
            break
        images = tokenizer.decode(tokens[active], row(descriptors, active), row(faces, active),
                                  seed=[candidate_seed(seeds[i], k) for i in active], **decode_kwargs).cpu()
        pixels = to_uint8(images) if candidates > 1 else None
        token_cos = [None] * len(active)
        if pixels is not None and getattr(scorer, "token_weight", 0.0) > 0:  # read each candidate back through the compressor
            again = tokenizer.encode(images).float().cpu()
            token_cos = F.cosine_similarity(again, tokens[active].float().cpu(), dim=-1).mean(-1).tolist()
        for j, i in enumerate(active):
            tried[i] += 1
            s = scorer.score(pixels[j], face_rows[i], counts[i], look_rows[i], casts[i], token_cos[j]) if pixels is not None else 1.0
            if s > scores[i]:
                best[i], scores[i], picked[i] = images[j], s, k
        active = [i for i in active if scores[i] < accept]
    return Reranked(torch.stack(best), scores, tried, picked)


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

    With a `scorer` (moviedreamer/rerank/identity.py IdentityScorer) and more than one candidate (the decoder config's `candidates`, or the
    argument), a shot with faces or a character count is decoded up to that many times and the candidate whose faces
    best match them kept: by face, and where the scorer has a look check, by the body under each face
    against the character's description among the story's cast."""

    def __init__(self, tokenizer, steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
                 scorer=None, candidates: int | None = None, accept: float | None = None):
        self.tokenizer, self.steps, self.guidance, self.sampler = tokenizer, steps, guidance, sampler
        c = tokenizer.decoder.config
        self.candidates = int(c.candidates if candidates is None else candidates) if scorer is not None else 1
        self.accept = float(c.accept if accept is None else accept)
        self.scorer = scorer
        self.last = None  # the last render's Reranked (tried, picked, score): for progress and tests

    @property
    def fingerprint(self) -> str:
        fp = f"{self.tokenizer.fingerprint}:{self.steps}:{self.guidance}:{self.sampler}"
        if self.candidates > 1:
            fp += f":rerank{self.candidates}:{self.accept}:{self.scorer.fingerprint}"
        return fp

    def render(self, tokens, condition, seed: int, size: tuple[int, int]) -> np.ndarray:
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
