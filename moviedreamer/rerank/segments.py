"""How well a sampled clip segment keeps the keyframe's characters, for the clip sampler's best-of-N segments.

The clip model sometimes loses a character within a segment (it fades into the background or a second copy
appears), although another noise draw of the same segment keeps them. The face pack finds and embeds the faces of the
keyframe once; each frame of a candidate is scored by the same IdentityScorer as keyframes (Hungarian-matched cosine
to those faces, penalties for faces missing or extra); a candidate's score is the mean over its frames.
"""

from __future__ import annotations

import numpy as np
import torch

from moviedreamer.rerank.identity import IdentityScorer, detect_all


class SegmentScorer:
    """How well a segment's frames keep the keyframe's faces (mean over frames of IdentityScorer.score)."""

    def __init__(self, face_embedder, presence=None, presence_every: int = 2, **identity_kwargs):
        self.identity = IdentityScorer(face_embedder, **identity_kwargs)
        self.presence, self.presence_every = presence, max(1, int(presence_every))  # encoders.presence.PresenceCheck or None

    @property
    def fingerprint(self) -> str:
        fp = f"segments:{self.identity.fingerprint}"
        return fp + (f":{self.presence.fingerprint}:{self.presence_every}" if self.presence is not None else "")

    def reference(self, keyframe: np.ndarray) -> torch.Tensor:
        """The face embeddings [N, D] found in the keyframe (uint8 [H, W, 3]); [0, D] when none is found."""
        dets, found = detect_all(self.identity.faces, keyframe)
        return found.float() if dets else torch.zeros(0, 1)

    def score(self, frames: np.ndarray, reference: torch.Tensor) -> float:
        """frames: uint8 [L, H, W, 3]. A keyframe without a face found: every frame scores 1 unless faces appear."""
        n = len(reference)
        return float(np.mean([self.identity.score(f, reference if n else None, characters=n) for f in frames]))

    def presence_term(self, frames: np.ndarray, looks, cast=None) -> float:
        """The presence check's term (in [-1, 0] at weight 1) on every `presence_every`-th frame, mean; 0 without a
        check or without the shot's characters' descriptions (`looks`; `cast`: the story's)."""
        if self.presence is None or looks is None:
            return 0.0
        return self.presence.term(np.asarray(frames)[:: self.presence_every], looks, cast)
