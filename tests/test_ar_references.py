"""A character's own reference frames in AR training (train/stages/ar_references.py): what a draw changes (a restyle
only clothes and hat, a vague description only the words), and the sequences the stage builds from it — portraits
inside the character's sheet entry, keyframes re-rendered only when restyled, the description cut only when vague."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from moviedreamer.ar.embed import CHAR_DESC, REF0, REFS

from moviedreamer.testing.ar import MeanColourTokenizer


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from moviedreamer.testing.ar import toy_world_ar_stage

    return toy_world_ar_stage(tmp_path_factory.mktemp("charrefs"), "references: 0, character_references: 2, character_references_p: 1.0",
                              composed=0.5)


def test_a_draw_changes_only_what_its_mode_says():
    from moviedreamer.train.stages.ar_references import RESTYLED, changed_look, portrait
    from moviedreamer.toyworld.world import ATTRIBUTES, character

    rng = np.random.default_rng(0)
    for cid in ("mia", "zed", "sam"):
        look = character(cid)
        for _ in range(20):
            new = changed_look(look, rng)
            changed = [k for k in ATTRIBUTES if getattr(new, k) != getattr(look, k)]
            assert 1 <= len(changed) <= 2 and set(changed) <= set(RESTYLED)  # the face stays
        p = portrait(cid, rng)
        assert p.characters == (cid,) and p.action == "stand" and p.framing in ("close", "medium") and p.move == "static"


def test_draws_follow_the_mode_weights_and_pick_a_character_of_the_episode(toy):
    from moviedreamer.train.stages.ar_references import draw_character_references

    episode = toy.index.load(0, toy.keys)
    story, (params, _) = toy.story(episode), toy.restyler.shot_params(episode)
    present = {c for _, _, _, shot in story.shots() for c in shot.characters}
    rng = np.random.default_rng(1)
    draws = [draw_character_references(story, params, rng, 3, {"agree": 1, "restyle": 2, "vague": 1}) for _ in range(200)]
    assert {d.story_id for d in draws} <= present and all(len(d.portraits) == 3 for d in draws)
    share = {m: sum(d.mode == m for d in draws) / 200 for m in ("agree", "restyle", "vague")}
    assert 0.38 < share["restyle"] < 0.62 and share["agree"] > 0.12 and share["vague"] > 0.12
    only = draw_character_references(story, params, rng, 1, {"vague": 1.0, "restyle": 0.0})
    assert only.mode == "vague" and only.description("written words") in ("a girl", "a boy", "a robot", "a cat")
    assert draws[0].description("written words") == ("written words" if draws[0].mode != "vague" else draws[0].description(""))


def _entry_span(part, index: int) -> tuple[int, int]:
    """Positions of the sheet entry of character `index` (from its description to the next description or [SHOT])."""
    descs = (part.types == CHAR_DESC).nonzero().flatten().tolist()
    end = descs[index + 1] if index + 1 < len(descs) else int((part.shot >= 0).nonzero()[0])
    return descs[index], end  # the next character's id tokens come before its description: inside the span


@pytest.mark.parametrize("mode", ["agree", "restyle", "vague"])
def test_the_stage_builds_the_sequence_the_mode_asks_for(toy, mode):
    from moviedreamer.train.stages.ar_references import CharacterReferenceDraw, portrait, portrait_frames, changed_look
    from moviedreamer.ar.tokens import encode_frames
    from moviedreamer.toyworld.world import character
    from moviedreamer.train.stages.ar_references import story_to_world_ids

    episode = toy.index.load(1, toy.keys)
    story, (params, fps) = toy.story(episode), toy.restyler.shot_params(episode)
    ids = story_to_world_ids(story, params)
    sid = sorted(ids)[0]
    rng = np.random.default_rng(5)
    look = changed_look(character(ids[sid]), rng) if mode == "restyle" else character(ids[sid])
    draw = CharacterReferenceDraw(sid, ids[sid], look, mode, (portrait(ids[sid], rng), portrait(ids[sid], rng)))
    plain = toy.sequences(episode, faces={})[0]
    seq = toy.sequences(episode, faces={}, character=draw)[0]
    index = [c.id for c in story.characters].index(sid)
    start, end = _entry_span(seq, index)
    types = seq.types[start:end].tolist()
    after = types[types.index(REFS) + 1 :]
    assert types.count(REFS) == 1 and after[:4] == [REF0, REF0 + 1] * 2 and (seq.types == REFS).sum() == 1
    assert not {REF0, REF0 + 1} & set(after[4:])  # the next character's entry, or the first shot
    expected = encode_frames(MeanColourTokenizer(), portrait_frames(draw, (128, 128), fps))
    torch.testing.assert_close(seq.vectors["key"][:4], expected.reshape(4, -1))  # the portraits, in the drawn look
    shots = [sid in shot.characters for _, _, _, shot in story.shots()]
    key_plain, key_seq = plain.vectors["key"].reshape(-1, 2, 3), seq.vectors["key"][4:].reshape(-1, 2, 3)
    for s, here in enumerate(shots):
        assert torch.equal(key_plain[s], key_seq[s]) != (here and mode == "restyle")  # only a restyle redraws the shots
    desc_plain = plain.vectors["desc"][plain.types[plain.at["desc"]] == CHAR_DESC]
    desc_seq = seq.vectors["desc"][seq.types[seq.at["desc"]] == CHAR_DESC]
    for i in range(len(story.characters)):
        assert torch.equal(desc_plain[i], desc_seq[i]) != (i == index and mode == "vague")  # only vague rewrites its words


def test_unknown_modes_are_refused(toy):
    from moviedreamer.errors import UserError
    from moviedreamer.train.config import load_config
    from moviedreamer.train.stages import load_stage

    cfg = load_config(toy.cfg.source, ["options.character_modes={sketchy: 1.0}"])
    with pytest.raises(UserError, match="character_modes: expected non-negative weights of agree, restyle, vague"):
        load_stage("ar")(cfg)
