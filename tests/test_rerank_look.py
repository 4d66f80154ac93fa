"""The reranker's look check (rerank/look.py): the body region under a face, the contrastive score against the
story's cast, and how it enters the identity score. A fake image encoder (a crop's mean colour) makes the arithmetic
exact; the toy CLIP checks that a rendered character reads as its own description."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moviedreamer.encoders.faces import Detection
from moviedreamer.rerank.look import LookCheck, body_box
from moviedreamer.rerank.identity import IdentityScorer

TOY = Path(__file__).resolve().parents[1] / "moviedreamer" / "weights" / "toy"
RED, GREEN, BLUE = torch.eye(3)


class MeanColour:
    """An 'image encoder' whose embedding of a crop is its mean RGB colour."""

    image_size = 8
    fingerprint = "mean-colour"

    def encode_image(self, x):
        return x.mean((2, 3)), None


class Faces:
    """A face pack that finds the given detections and embeds them as the given vectors."""

    fingerprint = "fake"

    def __init__(self, dets, embeddings):
        self.dets, self.embeddings = dets, embeddings
        self.finder = self.recognizer = self

    def find_faces(self, image):
        return self.dets

    def crop(self, image, det):
        return next(i for i, d in enumerate(self.dets) if d is det)

    def embed_crops(self, crops):
        return torch.stack([self.embeddings[i] for i in crops])


def face(x0, y0, x1, y1):
    return Detection(np.array([x0, y0, x1, y1], dtype=np.float32), 0.9)


def paint(image, det, colour):
    x0, y0, x1, y1 = body_box(det.bbox, image.shape[1], image.shape[0])
    image[y0:y1, x0:x1] = (np.asarray(colour) * 255).astype(np.uint8)


def test_body_box_is_below_and_around_the_face_and_clipped():
    assert body_box([20, 10, 30, 20], 64, 64) == (15, 8, 35, 40)
    assert body_box([0, 0, 10, 10], 12, 20) == (0, 0, 12, 20)  # clipped to the image


def test_scores_are_contrastive_over_the_cast():
    image = np.zeros((64, 64, 3), np.uint8)
    det = face(20, 10, 30, 20)
    paint(image, det, RED)
    look = LookCheck(MeanColour(), weight=2, temperature=20, floor=-5)
    s = look.scores(image, [det], torch.stack([RED, GREEN, torch.zeros(3)]), cast=torch.stack([RED, GREEN, BLUE]))
    assert s.shape == (3, 1)
    assert s[0, 0] == pytest.approx(1.0, abs=1e-6)  # the body is red: certainly the red character
    assert s[1, 0] == pytest.approx(0.0)  # clipped at the floor
    assert s[2, 0] == 1.0  # no description: neither helps nor hurts
    # a look-alike in the cast makes the same body less certainly the red character; the shot's own look counts once
    alike = F.normalize(torch.tensor([1.0, 0.05, 0.0]), dim=0)
    alone = look.scores(image, [det], RED[None], cast=RED[None])[0, 0]
    assert alone == pytest.approx(1.0) and look.scores(image, [det], RED[None], cast=None)[0, 0] == pytest.approx(1.0)
    with_alike = look.scores(image, [det], RED[None], cast=torch.stack([RED, alike]))[0, 0]
    expected = 1 + (20 - np.logaddexp(20, 20 * float(alike @ RED))) / 5
    assert with_alike == pytest.approx(expected, abs=1e-5) and with_alike < alone - 0.1
    with pytest.raises(ValueError, match="floor"):
        LookCheck(MeanColour(), floor=0)


def test_identity_score_sees_a_face_on_the_wrong_body():
    """Two characters drawn with the right faces, but each on the other's body (a look-alike's clothes): the face
    score cannot tell; with the look check it can, and the right picture scores 1."""
    a, b = F.normalize(torch.tensor([1.0, 0, 0, 0]), dim=0), F.normalize(torch.tensor([0, 1.0, 0, 0]), dim=0)
    left, right = face(8, 8, 18, 18), face(40, 8, 50, 18)
    good, swapped = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)
    paint(good, left, RED), paint(good, right, GREEN), paint(swapped, left, GREEN), paint(swapped, right, RED)
    faces, looks, cast = torch.stack([a, b]), torch.stack([RED, GREEN]), torch.stack([RED, GREEN, BLUE])
    pack = Faces([left, right], [a, b])
    plain, checked = IdentityScorer(pack), IdentityScorer(pack, look=LookCheck(MeanColour(), weight=2))
    assert plain.score(good, faces, 2, looks, cast) == pytest.approx(plain.score(swapped, faces, 2, looks, cast))
    assert checked.score(good, faces, 2, looks, cast) == pytest.approx(1.0, abs=1e-6)
    # the best joint assignment pairs each face with the body of its description instead: (0 + 2 * 1) / 3 each
    assert checked.score(swapped, faces, 2, looks, cast) == pytest.approx(2 / 3, abs=1e-6)
    # descriptions that do not line up with the face rows are not used (the face score alone)
    assert checked.score(swapped, faces, 2, looks[:1], cast) == pytest.approx(1.0)
    assert "look:mean-colour" in checked.fingerprint and "look" not in plain.fingerprint


def test_a_rendered_toy_character_reads_as_its_own_description(tmp_path):
    from moviedreamer.encoders.clip_vision import load_vision_encoder
    from moviedreamer.encoders.faces import load_face_pack
    from moviedreamer.encoders.longclip import load_descriptor_encoder
    from moviedreamer.script import load_story
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.story import generate_story, read_story_params
    from moviedreamer.script.write import write_story

    write_story(generate_story(1.0, seed=5001, resolution=(128, 128)), tmp_path / "story.yaml")
    loaded = load_story(tmp_path / "story.yaml")
    faces = load_face_pack(TOY / "faces")
    cast = loaded.story.characters
    desc = load_descriptor_encoder(TOY / "clip", "open_clip-folder").encode([c.description for c in cast]).embeddings.float()
    look = LookCheck(load_vision_encoder(TOY / "clip", "open_clip-folder"))
    checked = 0
    for params, (_, _, _, shot) in zip(read_story_params(loaded), loaded.story.shots()):
        if len(shot.characters) != 1:
            continue
        frame = render_frame(params, 0, loaded.story.fps, (128, 128)).image
        dets = faces.finder.find_faces(frame)
        if len(dets) != 1:
            continue
        s = look.scores(frame, dets, desc, cast=desc)[:, 0]
        own = [c.id for c in cast].index(shot.characters[0])
        assert s[own] == s.max() and s[own] > 0.5, (shot.characters, s)
        checked += 1
    assert checked >= 2, "the story has solo shots with a detectable face"
