"""The compositional toy world: any combination of attributes is a character that renders, reads back from its
description, and keeps the catalogue's ids for the catalogue's descriptions."""

import numpy as np
import pytest

from moviedreamer.toyworld.looks import describe_character, read_look
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import composed_cast, generate_story, read_story_params
from moviedreamer.toyworld.world import (
    ATTRIBUTES,
    CHARACTERS,
    FACE_KEYS,
    ShotParams,
    character,
    face_key,
    is_character,
    look_id,
    random_cast,
)


def test_every_description_reads_back_to_its_character():
    for c in CHARACTERS:
        assert read_look(describe_character(c)).id == c.id
    rng = np.random.default_rng(0)
    for cid in random_cast(rng, 300):
        read = read_look(describe_character(character(cid)))
        assert read.id == cid and not read.unknown and not read.conflicts


def test_a_description_decides_not_the_name():
    # the catalogue's Sam has a teal face, a green coat and a purple cap: this one is someone else
    read = read_look("Sam, a boy with a blue face, a red shirt and a green cap")
    assert read.id.startswith("look:") and read.look["head_colour"] == "blue" and read.look["clothes_colour"] == "red"
    assert read.look["hat"] == "green cap" and [w.text for w, _ in read.unknown] == ["sam"]
    c = character(read.id)
    assert (c.kind, c.clothes, c.eyes) == ("boy", "shirt", "big black")  # eyes: the default


def test_unknown_words_are_named_with_their_place_and_conflicts_found():
    text = "an old fisherman with a grey beard"
    read = read_look(text)
    assert [w.text for w, _ in read.unknown] == ["old", "fisherman", "grey", "beard"]
    assert all(text[w.start:w.end].lower() == w.text for w, _ in read.unknown)
    assert read_look("a girl with a red dress and a blue coat").conflicts


def test_ids_spell_their_attributes_and_bad_ids_are_refused():
    look = {"kind": "cat", "head_colour": "teal", "head_shape": "oval", "eyes": "sleepy green", "mouth": "open",
            "clothes_colour": "white", "clothes": "coat", "hat": "black crown"}
    cid = look_id(look)
    assert is_character(cid) and {k: getattr(character(cid), k) for k in ATTRIBUTES} == look
    assert not is_character("look:cat.teal") and not is_character("nobody")
    with pytest.raises(ValueError, match="hat"):
        look_id({**look, "hat": "paper crown"})
    with pytest.raises(AssertionError):
        ShotParams("park", ("nobody",), "stand", None, "wide", "static")


def test_a_composed_character_is_drawn_as_described():
    a = look_id({"kind": "robot", "head_colour": "green", "clothes_colour": "yellow", "clothes": "coat"})
    b = look_id({"kind": "robot", "head_colour": "green", "clothes_colour": "purple", "clothes": "coat"})
    fa = render_frame(ShotParams("snow", (a,), "stand", None, "close", "static", 3.0, 1), 0)
    fb = render_frame(ShotParams("snow", (b,), "stand", None, "close", "static", 3.0, 1), 0)
    colours = lambda img: {tuple(int(v) for v in px) for px in img.reshape(-1, 3)}
    yellow, purple = (245, 215, 60), (150, 80, 200)
    assert yellow in colours(fa.image) and purple not in colours(fa.image)
    assert purple in colours(fb.image) and yellow not in colours(fb.image)


def test_a_composed_story_round_trips_through_its_script(tmp_path):
    from moviedreamer.script import load_story
    from moviedreamer.script.write import write_story

    story = generate_story(0.3, seed=11, composed=True)
    assert all(not c["id"].startswith("look:") for c in story["characters"])  # story ids are short names
    path = tmp_path / "s.yaml"
    write_story(story, path)
    params = read_story_params(load_story(path))
    cast = {c for p in params for c in p.characters}
    assert params and all(c.startswith("look:") for c in cast)


def test_composed_casts_start_with_look_alikes_and_faces_are_identities():
    cast = composed_cast(np.random.default_rng(3), 4)
    a, b = character(cast[0]), character(cast[1])
    assert (a.kind, a.clothes, a.clothes_colour, a.hat) == (b.kind, b.clothes, b.clothes_colour, b.hat) and cast[0] != cast[1]
    assert len(set(cast)) == 4
    assert len(FACE_KEYS) == len(set(FACE_KEYS)) and face_key("mia") in FACE_KEYS
    boy = look_id({"kind": "boy", "hat": "red hat"})
    girl = look_id({"kind": "girl", "hat": "blue cap"})
    assert face_key(boy) == face_key(girl)  # drawn alike: one face


def test_a_datasets_face_names_lead_back_to_the_episodes_characters(tmp_path):
    """A dataset with composed casts names its face crops by the world's faces, not by the script's ids: face_owners
    maps each name to the characters of the episode with that face (the tokenizer and AR stages read faces so)."""
    from moviedreamer.script.shot_text import load_episode_story
    from moviedreamer.toyworld.dataset import write_dataset
    from moviedreamer.toyworld.story import face_owners
    from moviedreamer.train.data import ShardIndex

    data = write_dataset(tmp_path / "toy", episodes=2, shots=3, clip_frames=2, size=64, face_size=16, progress=False, composed=1.0)
    index = ShardIndex(data)
    names = index.meta["identities"]
    for i in range(2):
        episode = index.load(i, ("face_identity", "face_shot"))
        story = load_episode_story(index.path(i, ".yaml"))
        owners = face_owners(story, names)
        found = [names[j] for j in episode["face_identity"].tolist()]
        assert found and all(n in owners for n in found)  # every crop has an owner among the episode's characters
        assert all(set(v) <= {c.id for c in story.characters} for v in owners.values())
        shots = [shot for _, _, _, shot in story.shots()]
        for j, s in zip(episode["face_identity"].tolist(), episode["face_shot"].tolist()):
            assert set(owners[names[j]]) & set(shots[s].characters)  # ... and that owner is in the crop's shot
    catalogue = story.model_copy(update={"characters": story.characters[:1]})
    assert face_owners(catalogue, ["mia", "tom"]) == {story.characters[0].id: [story.characters[0].id]}
