"""Restyled references for few-shot training (train/stages/ar_restyle.py): re-rendering a toy-world episode from its
script reproduces its keyframes; a restyle changes exactly the shots of that character, in its clothes' colour; the
AR stage then takes both the keyframe and the reference tokens from the restyled renders while the script's text
stays as written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moviedreamer.ar.embed import REF0


class MeanColourTokenizer:
    """A stand-in keyframe tokenizer: 2 tokens = mean RGB of the left and right halves (enough to see clothes change)."""

    def encode(self, x):  # [B, 3, H, W] in [0, 1]
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].mean((-2, -1)), x[..., w:].mean((-2, -1))], 1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from moviedreamer.testing.ar import write_training_fixture
    from moviedreamer.ar.tokens import TokenSource
    from moviedreamer.toyworld.dataset import write_dataset
    from moviedreamer.train.config import load_config
    from moviedreamer.train.stages import load_stage

    root = tmp_path_factory.mktemp("restyle")
    data = write_dataset(root / "toy", episodes=2, shots=4, clip_frames=2, size=128, face_size=32, progress=False)
    _, profile = write_training_fixture(root / "enc", episodes=1, shots=1)
    (root / "ds.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}))
    (root / "ar.yaml").write_text(
        f"stage: ar\ndata: {data}\nout: {root / 'run'}\ndeepspeed: {root / 'ds.json'}\nsteps: 1\n"
        f"model: {{hidden_size: 32, layers: 1, heads: 4, max_position_embeddings: 256, token_dim: 3, face_dim: 8}}\n"
        f"options: {{encoders: {profile}, max_shots: 8, references: 2, references_p: 1.0, restyle_p: 1.0}}\n")
    stage = load_stage("ar")(load_config(root / "ar.yaml"))
    stage.__dict__["tokens"] = TokenSource(tokenizer=MeanColourTokenizer())
    return stage


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
