"""A character's reference frames at inference (pipeline/profile.py StoryEncoder): with a keyframe decoder trained to
read them they replace the character's descriptor slot (keyframe conditions, the reranker's cast, the clip stage's
looks); with one that was not, the words stay and a warning says the references reach the planner only."""

from __future__ import annotations

import logging

import torch
import yaml
from PIL import Image

from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.world import ShotParams


def test_reference_frames_take_the_characters_slots_only_for_a_decoder_that_reads_them(tmp_path, caplog):
    from moviedreamer.pipeline.profile import Profile, StoryEncoder
    from moviedreamer.script import load_story

    Image.fromarray(render_frame(ShotParams("beach", ("lea",), "stand", None, "close", "static"), 0, 8, (128, 128)).image).save(tmp_path / "ref.png")
    story = {"title": "t", "characters": [
        {"id": "mia", "name": "Mia", "description": "a girl with a round orange face, a blue dress and a red hat", "references": ["ref.png"]},
        {"id": "tom", "name": "Tom", "description": "a boy with a square green face, a yellow shirt and a blue cap"}],
        "scenes": [{"id": "s", "setting": "a sunny beach", "shots": [
            {"duration": 1, "characters": ["tom", "mia"], "action": "they stand", "camera": "wide shot"}]}]}
    (tmp_path / "story.yaml").write_text(yaml.safe_dump(story))
    loaded = load_story(tmp_path / "story.yaml")
    profile = Profile.load("toy")
    encoder = StoryEncoder(profile, profile.keyframe_tokenizer)
    assert not profile.keyframe_tokenizer.decoder.config.reference_prompts  # the committed decoder never saw them
    with caplog.at_level(logging.WARNING):
        plain = encoder.encode_story(loaded)
    assert any("not trained to read them" in r.getMessage() for r in caplog.records)
    profile.keyframe_tokenizer.decoder.config.reference_prompts = True
    try:
        read = encoder.encode_story(loaded)
    finally:
        profile.keyframe_tokenizer.decoder.config.reference_prompts = False
    a, b = plain.keyframe_conditions[0].descriptors, read.keyframe_conditions[0].descriptors
    assert torch.equal(a[:5], b[:5])  # fixed slots, then tom (first in the shot)
    assert not torch.allclose(a[5], b[5]) and torch.isclose(a[5].norm(), b[5].norm(), rtol=1e-4)  # mia: her frame
    assert torch.equal(plain.keyframe_conditions[0].cast[1], read.keyframe_conditions[0].cast[1])
    assert not torch.allclose(plain.keyframe_conditions[0].cast[0], read.keyframe_conditions[0].cast[0])
    assert not torch.allclose(plain.clip_conditions[0].looks[1], read.clip_conditions[0].looks[1])
    # the image slot points where the reference's CLIP image embedding points
    vision = profile.keyframe_tokenizer.vision
    emb = vision.encode_image(torch.as_tensor(render_frame(ShotParams("beach", ("lea",), "stand", None, "close", "static"), 0, 8,
                                                                        (128, 128)).image)[None].permute(0, 3, 1, 2))[0][0]
    assert torch.nn.functional.cosine_similarity(b[5], emb, dim=0) > 0.999


def test_a_character_shown_only_in_references_gets_its_face_from_them(tmp_path):
    """A new character with references and no faces: its sheet faces are the largest face of each reference frame
    (a frame without a face is left out), so its identity is kept like a character with face files."""
    from moviedreamer.ar.embed import encode_story
    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.script import load_story

    Image.fromarray(render_frame(ShotParams("beach", ("lea",), "stand", None, "close", "static"), 0, 8, (128, 128)).image).save(tmp_path / "a.png")
    Image.fromarray(render_frame(ShotParams("city", ("lea",), "stand", None, "medium", "static"), 0, 8, (128, 128)).image).save(tmp_path / "b.png")
    Image.fromarray(render_frame(ShotParams("beach", (), "stand", None, "wide", "static"), 0, 8, (128, 128)).image).save(tmp_path / "empty.png")
    story = {"title": "t", "characters": [{"id": "nia", "name": "Nia", "description": "a girl", "references": ["a.png", "empty.png", "b.png"]}],
             "scenes": [{"id": "s", "setting": "a sunny beach", "shots": [{"duration": 1, "characters": ["nia"], "action": "stands", "camera": "wide"}]}]}
    (tmp_path / "story.yaml").write_text(yaml.safe_dump(story))
    profile = Profile.load("toy")
    sheet, _, _ = encode_story(load_story(tmp_path / "story.yaml"), profile, profile.keyframe_tokenizer)
    faces = sheet.characters[0].faces
    assert faces.shape[0] == 2  # the frame without a face is left out
    direct = profile.faces.embed_reference(tmp_path / "a.png")
    torch.testing.assert_close(faces[0], direct)
    assert torch.nn.functional.cosine_similarity(faces[0], faces[1], dim=0) > 0.5  # one face, two frames
