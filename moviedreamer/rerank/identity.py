"""Identity scores for best-of-N candidates: does a picture show the characters meant to be in it?

One sample of a crowded or wide shot can miss a character or draw one twice, although another noise draw of the same
shot gets it right. So the keyframe renderer and the clip sampler may draw several candidates and keep the one whose
faces best match the given face embeddings: the face pack's detector finds the faces in each candidate, its recognizer
embeds them, and the Hungarian assignment (scipy) pairs detections with the given faces. A candidate's score is the
mean matched cosine over the given faces (an unmatched given face counts 0), less a penalty for each detection left
over: an "intruder" (its cosine to every given face below `intruder_cos`: somebody who is not in the shot) costs
`intruder_penalty`, a duplicate (like a given face: a character drawn twice) the smaller `duplicate_penalty`, both per
given face. When the script says how many characters a shot has, characters without a face embedding count too: a
left-over detection unlike every given face stands for one of them, and a shot with nobody in it penalises every face
found. Where the profile's vision encoder shares the descriptors' space, a look check (look.py) also asks whether the
body under each face reads as that character's description among the story's cast.

Candidate 0 uses the picture's own seed: with one candidate, or when the first is accepted, the result is exactly the
plain sample. Candidate k > 0 draws from a seed derived from (seed, k) by numpy's SeedSequence.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from moviedreamer.errors import UserError


def candidate_seed(seed: int, k: int) -> int:
    """The noise seed of candidate k of a keyframe decoded with `seed` (k = 0: the seed itself)."""
    if k == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % 2**63, k]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def given_rows(faces) -> np.ndarray:
    """Indices of the non-absent (not all-zero) rows of a face-embedding matrix [N, D] (None → none)."""
    if faces is None:
        return np.zeros(0, dtype=int)
    return np.flatnonzero((torch.as_tensor(faces).float().abs().sum(-1) > 0).numpy())


def given_faces(faces) -> torch.Tensor:
    """The non-absent rows of a face-embedding matrix [N, D] (None → [0, D]), L2-normalised."""
    if faces is None:
        return torch.zeros(0, 1)
    return F.normalize(torch.as_tensor(faces).float()[given_rows(faces)], dim=-1)


def detect_all(face_embedder, image: np.ndarray):
    """Every face the pack's detector finds in `image` and the recognizer's embeddings of them ([n, D]; small faces
    included, unlike FaceEmbedder.detect_and_embed: a reranker must see every face drawn)."""
    dets = face_embedder.finder.find_faces(image)
    if not dets:
        return [], None
    rec = face_embedder.recognizer
    return dets, rec.embed_crops([rec.crop(image, d) for d in dets])


class IdentityScorer:
    """How well an image shows the given faces: mean over the given faces of the cosine to the detection assigned to
    each (Hungarian assignment on cosine; 0 for a face left without a detection), minus, per given face,
    `intruder_penalty` for each unassigned detection unlike all of them and `duplicate_penalty` for each one like one
    of them. Needs a face pack with a detector.

    With a `look` (look.LookCheck) and the characters' descriptions, the assignment and the matched score use, per
    given face, (face cosine + w · look score) / (1 + w): the body under the face must read as that character's
    description too (w = `look.weight`)."""

    def __init__(self, face_embedder, intruder_cos: float = 0.5, intruder_penalty: float = 0.5, duplicate_penalty: float = 0.1,
                 look=None, token_weight: float = 0.0, presence=None):
        self.presence = presence  # encoders.presence.PresenceCheck or None
        self.intruder_cos, self.intruder_penalty, self.duplicate_penalty = float(intruder_cos), float(intruder_penalty), float(duplicate_penalty)
        self.look, self.token_weight = look, float(token_weight)
        if face_embedder.finder is None:
            raise UserError("keyframe reranking: the face model pack has no face detector (expected e.g. det_10g.onnx or "
                            "scrfd_10g_bnkps.onnx in the pack folder); set the decoder's candidates to 1")
        self.faces = face_embedder

    @property
    def fingerprint(self) -> str:
        fp = f"{self.faces.fingerprint}:{self.intruder_cos}:{self.intruder_penalty}:{self.duplicate_penalty}:{self.token_weight}"
        fp += f":{self.look.fingerprint}" if self.look is not None else ""
        return fp + (f":{self.presence.fingerprint}" if self.presence is not None else "")

    def score(self, image: np.ndarray, faces, characters: int | None = None, looks=None, cast=None, token_cos: float | None = None) -> float:
        """The identity score, less `token_weight` · (1 − token_cos) where the cosine between the candidate's re-encoded
        tokens and the tokens it was decoded from is given (a candidate the compressor reads back as the planned
        keyframe is the more faithful one)."""
        s = self.identity(image, faces, characters, looks, cast)
        if self.token_weight and token_cos is not None:
            s -= self.token_weight * (1.0 - float(token_cos))
        if self.presence is not None and looks is not None:
            s += self.presence.term(image, looks, cast)
        return s

    def identity(self, image: np.ndarray, faces, characters: int | None = None, looks=None, cast=None) -> float:
        """image: uint8 [H, W, 3] RGB; faces: [N, D] embeddings of the characters meant to be in it (zero rows:
        characters without a face); `characters`: how many are meant to be in it, when known (the script says; a
        character without a face embedding is then credited for any left-over detection unlike the given faces);
        `looks`: [N, Dd] the same characters' description embeddings (row i ↔ face row i), `cast`: [M, Dd] those
        of every character of the story (used with a look check only)."""
        given = given_faces(faces)
        faceless = max(0, int(characters) - len(given)) if characters is not None else 0
        n = len(given) + faceless
        if n == 0 and characters is None:
            return 1.0  # nothing to check: every candidate is as good as the first
        dets, found = detect_all(self.faces, image) if len(given) else (self.faces.finder.find_faces(image), None)
        if n == 0:  # nobody is meant to be in the shot: every face is an intruder
            return 1.0 - self.intruder_penalty * len(dets)
        if not dets:
            return 0.0
        matched, left, strangers = 0.0, len(dets), len(dets)
        if len(given):
            sim = (given @ found.T.to(given.dtype)).numpy()
            joint = sim
            if self.look is not None and looks is not None and len(looks) == len(torch.as_tensor(faces)):
                w = self.look.weight
                joint = (sim + w * self.look.scores(image, dets, torch.as_tensor(looks)[given_rows(faces)], cast)) / (1 + w)
            rows, cols = linear_sum_assignment(-joint)
            rest = np.setdiff1d(np.arange(sim.shape[1]), cols)
            matched, left = float(joint[rows, cols].sum()), len(rest)
            strangers = int((sim[:, rest].max(0) < self.intruder_cos).sum()) if len(rest) else 0
        found_faceless = min(faceless, strangers)  # somebody not among the given faces: a character without one
        intruders, duplicates = strangers - found_faceless, left - strangers
        penalty = self.intruder_penalty * intruders + self.duplicate_penalty * duplicates
        return (matched + found_faceless - penalty) / n
