"""Best-of-N segments: keep the sampled segment whose frames still show the keyframe's characters.

The toy I2V sometimes loses a character within a segment (it fades into the background or a second copy appears),
although another noise draw of the same segment keeps them. Like the keyframe reranking (tokenizer/rerank.py), a
segment is sampled up to `candidates` times (I2VSettings.candidates; only in the shot's first
`candidate_segments` segments) and the candidate kept whose frames match the keyframe's faces best: the profile's
face pack finds and embeds the faces of the keyframe once; each frame of a candidate is scored by the same
IdentityScorer (Hungarian-matched cosine to those faces, penalties for faces missing or extra); a candidate's score is
the mean over its frames, and the first candidate reaching `accept` is kept without trying more. Candidate 0 draws
the segment's own noise, so with one candidate the clip is exactly the plain sample.
"""

from __future__ import annotations

import numpy as np
import torch


class SegmentScorer:
    """How well a segment's frames keep the keyframe's faces (mean over frames of IdentityScorer.score)."""

    def __init__(self, face_embedder, presence=None, presence_every: int = 2, **identity_kwargs):
        from moviedreamer.tokenizer.rerank import IdentityScorer

        self.identity = IdentityScorer(face_embedder, **identity_kwargs)
        self.presence, self.presence_every = presence, max(1, int(presence_every))  # encoders.presence.PresenceCheck or None

    @property
    def fingerprint(self) -> str:
        fp = f"segments:{self.identity.fingerprint}"
        return fp + (f":{self.presence.fingerprint}:{self.presence_every}" if self.presence is not None else "")

    def reference(self, keyframe: np.ndarray) -> torch.Tensor:
        """The face embeddings [N, D] found in the keyframe (uint8 [H, W, 3]); [0, D] when none is found."""
        from moviedreamer.tokenizer.rerank import detect_all

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
