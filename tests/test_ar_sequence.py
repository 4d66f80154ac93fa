"""The sequence builder and the anti-overfitting switches at the sequence level (flip words, random faces,
episode order, dropout, random token masking), keyframe-token sources and few-shot references."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from moviedreamer.ar.embed import (ACTION, CAMERA, CHAR_DESC, CHAR_ID, FACE, KEY0, KF, PLOT, REF0, REFS, SETTING, SHEET, SHOT, SHOT_CHAR,
                                   STYLE, build_sequence, encode_references, encode_script, prefix_part, shot_part, swap_left_right)
from moviedreamer.ar.model import causal_mask
from moviedreamer.testing.ar import QuadrantTokenizer, quadrant_tokens, random_sheet, random_shots, tiny_model
from moviedreamer.ar.tokens import TokenSource
from moviedreamer.script.models import Story
from moviedreamer.errors import UserError
from moviedreamer.train.stages.ar import episode_order, pick_faces, pick_references


def test_layout_of_sheet_references_and_shots():
    model = tiny_model()
    sheet = random_sheet(model, characters=2, faces=2)
    shots = random_shots(model, 3, sheet=sheet)
    keys = torch.randn(3, 2, model.config.token_dim)
    refs = torch.randn(4, 2, model.config.token_dim)
    seq = build_sequence(sheet, shots, keys, refs)
    t = seq.types.tolist()
    char = [CHAR_ID, CHAR_ID, CHAR_DESC, FACE, FACE]
    assert t[: 2 + 2 * 5 + 1 + 8] == [SHEET, STYLE, *char, *char, REFS] + [REF0, REF0 + 1] * 4
    first_shot = t[t.index(SHOT) :][:10]
    assert first_shot[:4] == [SHOT, SETTING, ACTION, CAMERA] and PLOT not in first_shot[:5]  # shot 0 has no plot
    assert t.count(SHOT) == 3 and t.count(KF) == 3 and t.count(SHOT_CHAR) == 2 * (1 + 2 + 1)  # 1, 2, 1 characters present
    # the targets are exactly the shots' keyframe tokens, each right after [KF] or the previous token
    assert seq.target.sum() == 6
    for i in seq.target.nonzero().flatten().tolist():
        assert seq.types[i - 1] in (KF, KEY0)
    torch.testing.assert_close(seq.vectors["key"][seq.target[seq.at["key"]]], keys.reshape(6, -1))
    torch.testing.assert_close(seq.vectors["key"][: 8], refs.reshape(8, -1))
    assert (seq.shot[seq.target] == torch.tensor([0, 0, 1, 1, 2, 2])).all() and (seq.shot[: t.index(SHOT)] == -1).all()


def test_embedding_puts_each_modality_where_it_belongs():
    model = tiny_model()
    sheet = random_sheet(model, characters=1, faces=1)
    part = prefix_part(sheet)
    base = model.embed(part)
    sheet.characters[0].faces[0] += 1.0
    moved = model.embed(prefix_part(sheet))
    changed = (moved - base).abs().sum(-1) > 0
    assert changed.tolist() == (part.types == FACE).tolist()
    text_at = (part.types == CHAR_ID).nonzero().flatten()
    expected = model.type_emb.weight[CHAR_ID] + model.backbone.embed_tokens.weight[part.text[text_at]]
    torch.testing.assert_close(base[text_at], expected)


def test_dropout_half_is_in_the_configs_and_active_in_training():
    import yaml

    from moviedreamer.registry import REPO_ROOT

    for cfg in ("configs/toy/ar.yaml", "configs/paper/ar.yaml"):
        assert yaml.safe_load((REPO_ROOT / cfg).read_text())["model"]["dropout"] == 0.5
    model = tiny_model()
    assert model.config.dropout == 0.5
    drops = [m for proj in (model.desc_proj, model.face_proj, model.key_proj) for m in proj if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.5 for d in drops)
    part = shot_part(random_shots(model, 1)[0])
    model.train()
    assert not torch.equal(model.embed(part), model.embed(part))
    model.eval()
    assert torch.equal(model.embed(part), model.embed(part))


def test_random_token_masking_hides_the_asked_fraction_of_inputs():
    L, p = 400, 0.3
    valid = torch.ones(2, L, dtype=torch.bool)
    valid[1, 300:] = False
    torch.manual_seed(0)
    m = causal_mask(valid, p)[:, 0]
    upper = torch.ones(L, L, dtype=torch.bool).triu(1)
    assert not m[:, upper].any()  # still causal
    assert m[:, torch.eye(L, dtype=torch.bool)].all()  # every query sees itself
    assert not m[1, :, 300:][~torch.eye(L, dtype=torch.bool)[:, 300:]].any()  # padding keys hidden
    lower = torch.ones(L, L, dtype=torch.bool).tril(-1)
    frac = 1 - m[0][lower].float().mean().item()
    assert abs(frac - p) < 0.05
    hidden_cols = ~m[0, -1, :-1]  # a masked token is hidden from every later query
    assert torch.equal(~m[0, L - 2, : L - 2], hidden_cols[: L - 2])
    assert torch.equal(causal_mask(valid, 0.0)[0, 0], torch.ones(L, L, dtype=torch.bool).tril())


class FakeTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [sum(text.encode()) % 50, len(text)]}


class FakeDescriptor:
    embed_dim = 4

    def __init__(self):
        self.seen = []

    def encode(self, texts):
        self.seen += texts
        rows = [torch.tensor(list(hashlib.sha256(t.encode()).digest()[:4]), dtype=torch.float32) for t in texts]
        return type("E", (), {"embeddings": torch.stack(rows)})()


STORY = {"title": "t", "style": "flat", "characters": [{"id": "mia", "name": "Mia", "description": "a girl"}, {"id": "tom", "name": "Tom", "description": "a boy"}],
         "scenes": [{"id": "beach", "setting": "a beach", "plot": "fun", "shots": [
             {"duration": 1.0, "characters": ["mia"], "action": "Mia runs to the right", "camera": "wide shot, pan left"},
             {"duration": 1.0, "characters": ["tom", "mia"], "action": "Tom waves", "camera": "close-up"}]}]}


def test_flip_swaps_left_and_right_in_the_script():
    assert swap_left_right("Mia runs to the right, camera pans Left") == "Mia runs to the left, camera pans Right"
    assert swap_left_right("bright lights") == "bright lights"  # whole words only
    story = Story.model_validate(STORY)
    desc = FakeDescriptor()
    _, plain = encode_script(story, FakeTokenizer(), desc)
    _, flipped = encode_script(story, FakeTokenizer(), desc, flip=True)
    expect = desc.encode(["Mia runs to the left", "wide shot, pan right"]).embeddings
    torch.testing.assert_close(flipped[0].action, expect[0])
    torch.testing.assert_close(flipped[0].camera, expect[1])
    assert not torch.equal(plain[0].action, flipped[0].action) and torch.equal(plain[1].action, flipped[1].action)


def test_script_encoding_uses_given_faces_and_identifier_tokens():
    story = Story.model_validate(STORY)
    faces = {"mia": torch.ones(1, 3)}
    sheet, shots = encode_script(story, FakeTokenizer(), FakeDescriptor(), faces=faces)
    assert [c.id for c in sheet.characters] == ["mia", "tom"]
    assert torch.equal(sheet.characters[0].faces, faces["mia"]) and sheet.characters[1].faces.numel() == 0
    assert shots[1].characters == [FakeTokenizer()("tom")["input_ids"], FakeTokenizer()("mia")["input_ids"]]
    assert shots[0].plot is not None and sheet.style is not None


def test_random_face_picks_another_embedding_of_the_same_character():
    faces = {"mia": torch.randn(5, 3), "tom": torch.randn(3, 3)}
    picks = [pick_faces(faces, np.random.default_rng(s), random_face=True) for s in range(30)]
    for cid in faces:
        rows = {int((faces[cid] == p[cid]).all(-1).nonzero()) for p in picks}  # always one of its own crops
        assert len(rows) > 1
    fixed = [pick_faces(faces, np.random.default_rng(s), random_face=False) for s in range(5)]
    assert all(torch.equal(p["mia"], faces["mia"][:1]) for p in fixed)
    dropped = [pick_faces(faces, np.random.default_rng(s), True, face_drop=1.0) for s in range(3)]
    assert all(p == {} for p in dropped)


def test_episode_order_and_reference_picks():
    assert episode_order(4, False) == [0, 1, 2, 3] and episode_order(4, True) == [3, 2, 1, 0]
    picks = pick_references(8, 5, np.random.default_rng(0), clips=torch.zeros(8, 6, 1, 1, 3))
    assert len(picks) == 5 and len({s for s, _ in picks}) == 5 and all(1 <= t < 6 for _, t in picks)
    assert len(pick_references(3, 10, np.random.default_rng(0))) == 10


def test_token_source_precomputed_or_from_a_frozen_tokenizer():
    frames = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    frames[:, :, :4] = 0  # left half dark: a flip changes token 0
    clips = torch.stack([frames, frames.flip(2)], 1)  # [S, T, H, W, 3]
    episode = {"keyframes": frames, "clips": clips, "meta": {"id": "e"}}
    tok = QuadrantTokenizer()
    src = TokenSource(tokenizer=tok)
    torch.testing.assert_close(src.keyframes(episode), quadrant_tokens(frames))
    torch.testing.assert_close(src.keyframes(episode, flip=True), quadrant_tokens(frames, flip=True))
    assert not torch.allclose(src.keyframes(episode), src.keyframes(episode, flip=True))
    assert src.encoded == 6  # each (episode, flip) encoded once, then served from memory
    pre = {**episode, "keyframe_tokens": torch.zeros(3, 2, 6), "keyframe_tokens_hflip": torch.ones(3, 2, 6)}
    calls = tok.calls
    assert src.keyframes(pre).sum() == 0 and src.keyframes(pre, flip=True).sum() == 36 and tok.calls == calls  # precomputed: no encoding
    torch.testing.assert_close(src.frames(episode, [(2, 1), (0, 1)], from_clips=True), quadrant_tokens(clips[[2, 0], 1]))
    torch.testing.assert_close(src.frames(pre, [(2, 1)]), pre["keyframe_tokens"][[2]])
    with pytest.raises(Exception, match="keyframe tokens are not precomputed"):
        TokenSource().keyframes(episode)


def test_reference_frames_are_encoded_and_inserted_after_the_sheet(tmp_path):
    from PIL import Image

    paths = []
    for i in range(3):
        img = np.full((16, 24, 3), 40 * i, np.uint8)
        Image.fromarray(img).save(tmp_path / f"ref{i}.png")
        paths.append(tmp_path / f"ref{i}.png")
    refs = encode_references(paths, QuadrantTokenizer())
    assert refs.shape == (3, 2, 6)
    torch.testing.assert_close(refs[2, 0], torch.full((6,), 80 / 255))
    model = tiny_model(token_dim=6)
    part = prefix_part(random_sheet(model), refs)
    assert (part.types == REFS).sum() == 1 and (part.types == REF0).sum() == 3 and (part.types == REF0 + 1).sum() == 3
    assert encode_references([], QuadrantTokenizer()) is None


def test_a_loaded_story_encodes_faces_and_reference_frames_for_the_planner(tmp_path):
    """Inference side of few-shot: the script's references: frames become tokens in the pinned prefix."""
    import yaml
    from PIL import Image

    from moviedreamer.ar.embed import encode_story
    from moviedreamer.script import load_story

    (tmp_path / "refs").mkdir()
    for name, value in (("mia_face.png", 200), ("frame1.png", 30), ("frame2.png", 90)):
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(tmp_path / "refs" / name)
    story = {**STORY, "references": ["refs/frame1.png", "refs/frame2.png"],
             "characters": [{**STORY["characters"][0], "faces": ["refs/mia_face.png"]}, STORY["characters"][1]]}
    (tmp_path / "story.yaml").write_text(yaml.safe_dump(story))

    class Faces:
        def embed_reference(self, path):
            return torch.full((3,), float(np.asarray(Image.open(path)).mean()))

    encoders = type("Encoders", (), {"text_tokenizer": FakeTokenizer(), "descriptor": FakeDescriptor(), "faces": Faces()})()
    sheet, shots, refs = encode_story(load_story(tmp_path / "story.yaml"), encoders, QuadrantTokenizer())
    assert torch.equal(sheet.characters[0].faces, torch.full((1, 3), 200.0)) and sheet.characters[1].faces.numel() == 0
    assert len(shots) == 2 and refs.shape == (2, 2, 6)
    torch.testing.assert_close(refs[:, 0, 0], torch.tensor([30 / 255, 90 / 255]))
    part = prefix_part(sheet, refs)
    assert (part.types == REFS).sum() == 1 and (part.types >= REF0).sum() == 4
    torch.testing.assert_close(part.vectors["key"], refs.reshape(4, 6))


def test_a_characters_own_reference_frames_sit_in_its_entry_of_the_sheet(tmp_path):
    """characters[].references: encoded with the keyframe tokenizer into that character's entry, after its faces and
    before the next character; the story-level references still follow the whole sheet."""
    import yaml
    from PIL import Image

    from moviedreamer.ar.embed import encode_story
    from moviedreamer.script import load_story

    (tmp_path / "refs").mkdir()
    for name, value in (("tom_a.png", 60), ("tom_b.png", 120), ("scene.png", 30)):
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(tmp_path / "refs" / name)
    story = {**STORY, "references": ["refs/scene.png"],
             "characters": [STORY["characters"][0], {**STORY["characters"][1], "references": ["refs/tom_a.png", "refs/tom_b.png"]}]}
    (tmp_path / "story.yaml").write_text(yaml.safe_dump(story))
    encoders = type("Encoders", (), {"text_tokenizer": FakeTokenizer(), "descriptor": FakeDescriptor(), "faces": None})()
    sheet, _, refs = encode_story(load_story(tmp_path / "story.yaml"), encoders, QuadrantTokenizer())
    assert sheet.characters[0].references is None and sheet.characters[1].references.shape == (2, 2, 6)
    part = prefix_part(sheet, refs)
    t = part.types.tolist()
    descs = [i for i, x in enumerate(t) if x == CHAR_DESC]
    marks = [i for i, x in enumerate(t) if x == REFS]
    assert len(marks) == 2 and descs[1] < marks[0] < marks[1]  # the character's own block, then the story's
    assert t[marks[0] + 1 : marks[0] + 5] == [REF0, REF0 + 1, REF0, REF0 + 1] and t[marks[1] + 1 :] == [REF0, REF0 + 1]
    torch.testing.assert_close(part.vectors["key"][:4, 0], torch.tensor([60, 60, 120, 120]) / 255)
    with pytest.raises(UserError, match="need the profile's keyframe tokenizer"):
        encode_story(load_story(tmp_path / "story.yaml"), encoders, None)


def test_memo_descriptor_encodes_each_text_once():
    from types import SimpleNamespace

    from moviedreamer.train.stages.ar import MemoDescriptor

    seen = []

    class Encoder:
        embed_dim = 4

        def encode(self, texts):
            seen.extend(texts)
            return SimpleNamespace(embeddings=torch.stack([torch.full((4,), float(len(t))) for t in texts]))

    memo = MemoDescriptor(Encoder())
    a = memo.encode(["sea", "forest", "sea"]).embeddings
    b = memo.encode(["forest", "sky"]).embeddings
    assert seen == ["sea", "forest", "sky"] and a[:, 0].tolist() == [3, 6, 3] and b[:, 0].tolist() == [6, 3]
    assert memo.encode([]).embeddings.shape == (0, 4)


def test_token_source_encodes_each_episode_once_into_its_disk_cache(tmp_path):
    """The paper AR stage encodes the keyframe tokens the shards lack once, before training (configs/paper/ar.yaml
    token_cache): later epochs, ranks and runs read them back from the cache without the tokenizer."""
    frames = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    episode = {"keyframes": frames, "meta": {"id": "ep-000007"}}
    loads = []
    src = TokenSource(lambda: loads.append(1) or QuadrantTokenizer(), cache_dir=tmp_path / "cache")
    first = src.keyframes(episode), src.keyframes(episode, flip=True)
    assert src.encoded == 6 and len(loads) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["ep-000007.hflip.safetensors", "ep-000007.safetensors"]
    src.release()
    assert src._tok is None
    later = TokenSource(lambda: pytest.fail("the tokenizer must not load: the tokens are cached"), cache_dir=tmp_path / "cache")
    torch.testing.assert_close(later.keyframes(episode), first[0])
    torch.testing.assert_close(later.keyframes(episode, flip=True), first[1])
    assert later.encoded == 0


def test_a_reference_frame_without_a_character_is_warned_about_by_name(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from moviedreamer.ar.embed import references_without_characters
    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.world import ShotParams

    shot = ShotParams("beach", ("mia",), "stand", None, "close", "static")
    Image.fromarray(render_frame(shot, 0, 8, (128, 128)).image).save(tmp_path / "mia.png")
    Image.fromarray(np.full((128, 128, 3), 200, np.uint8)).save(tmp_path / "blank.png")
    mia = SimpleNamespace(id="mia", references=["blank.png", "mia.png"])
    loaded = SimpleNamespace(story=SimpleNamespace(references=["mia.png", "blank.png"], characters=[mia]), resolve=lambda rel: tmp_path / rel)
    lines = references_without_characters(loaded, Profile.load("toy"))
    assert len(lines) == 2 and "blank.png: references[1]: no character found" in lines[0]
    assert "blank.png: characters[0].references[0] (mia): no character found" in lines[1] and "how mia looks" in lines[1]
    assert references_without_characters(loaded, SimpleNamespace(faces=SimpleNamespace(finder=None))) == []
