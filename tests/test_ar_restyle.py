"""Restyled references for few-shot training (train/stages/ar_restyle.py): re-rendering a toy-world episode from its
script reproduces its keyframes; a restyle changes exactly the shots of that character, in its clothes' colour; the
AR stage then takes both the keyframe and the reference tokens from the restyled renders while the script's text
stays as written."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from moviedreamer.ar.embed import REF0


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from moviedreamer.testing.ar import toy_world_ar_stage

    return toy_world_ar_stage(tmp_path_factory.mktemp("restyle"), "references: 2, references_p: 1.0, restyle_p: 1.0")


def _with_character(stage, episode):
    story = stage.story(episode)
    shots = [shot for _, _, _, shot in story.shots()]
    cid = next(c for shot in shots for c in shot.characters)
    return cid, [cid in shot.characters for shot in shots]


def test_rerendering_the_script_reproduces_the_stored_keyframes(toy):
    from moviedreamer.toyworld.world import CHARACTER_BY_ID

    episode = toy.index.load(0, toy.keys)
    cid, _ = _with_character(toy, episode)
    same = (cid, CHARACTER_BY_ID[cid].clothes_colour)  # "restyled" into the clothes it already wears
    picks = [(s, 0) for s in range(len(episode["keyframes"]))]
    assert torch.equal(toy.restyler.frames(episode, same, picks), episode["keyframes"])


def test_restyle_changes_exactly_the_shots_of_the_character_into_the_new_colour(toy):
    from moviedreamer.toyworld.world import COLOURS

    episode = toy.index.load(1, toy.keys)
    cid, present = _with_character(toy, episode)
    picks = [(s, 0) for s in range(len(present))]
    new = toy.restyler.frames(episode, (cid, "black"), picks)
    for s, here in enumerate(present):
        old = episode["keyframes"][s]
        changed = (new[s] != old).any(-1)
        assert bool(changed.any()) == here
        if here:
            assert (new[s][changed] == torch.tensor(COLOURS["black"], dtype=torch.uint8)).all(-1).float().mean() > 0.9


def test_stage_draws_a_restyle_and_takes_keyframes_and_references_from_it(toy):
    from moviedreamer.train.stages.ar_restyle import draw_restyle
    from moviedreamer.toyworld.world import CHARACTER_BY_ID

    episode = toy.index.load(1, toy.keys)
    story = toy.story(episode)
    cid, colour = draw_restyle(story, np.random.default_rng(3))
    assert any(cid in shot.characters for _, _, _, shot in story.shots()) and colour != CHARACTER_BY_ID[cid].clothes_colour
    cid, present = _with_character(toy, episode)
    refs = [(present.index(True), 0), (0, 1)]
    plain = toy.sequences(episode, faces={}, refs=refs)[0]
    restyled = toy.sequences(episode, faces={}, refs=refs, restyle=(cid, "black"))[0]
    n_ref = 2 * len(refs)  # 2 tokens per frame
    assert torch.equal(plain.text, restyled.text) and torch.equal(plain.types, restyled.types)  # the written script ...
    assert all(torch.equal(plain.vectors[k], restyled.vectors[k]) for k in plain.vectors if k != "key")  # ... descriptions too
    key_plain, key_new = plain.vectors["key"][n_ref:].reshape(-1, 2, 3), restyled.vectors["key"][n_ref:].reshape(-1, 2, 3)
    for s, here in enumerate(present):
        assert torch.equal(key_plain[s], key_new[s]) != here
    ref_new = restyled.vectors["key"][:n_ref].reshape(-1, 2, 3)
    torch.testing.assert_close(ref_new, key_new[[s for s, _ in refs]])  # references = restyled keyframes of the picks
    assert (restyled.types >= REF0).sum() == n_ref
