"""The I2V model reads the shot's words: per-word descriptor states (encoders/longclip.py `encode_words`), the
conditioning's `descriptor_words` tokens, and the i2v stage training on the script's own phrases, mirrored with
the frames (video/conditioning.py descriptor_inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

torch.set_num_threads(1)
TOY_CLIP = Path(__file__).resolve().parents[1] / "moviedreamer" / "weights" / "toy" / "clip"


@pytest.fixture(scope="module")
def toy_text():
    from moviedreamer.encoders.longclip import load_descriptor_encoder

    return load_descriptor_encoder(TOY_CLIP)


def _eot_row(enc, text: str) -> int:
    _, n, _ = enc.tokenizer([text])
    return n[0] - 1  # [SOT] + pieces + [EOT]


def test_word_states_end_in_the_pooled_embedding_and_tell_left_from_right(toy_text):
    texts = ["Mia runs to the left. wide shot", "Mia runs to the right. wide shot"]
    words = toy_text.encode_words(texts, 24)
    pooled = toy_text.encode(texts).embeddings
    assert words.shape == (2, 24, toy_text.embed_dim)
    e = _eot_row(toy_text, texts[0])
    assert torch.allclose(words[:, e], pooled, atol=1e-4)  # the EOT position's state is the pooled embedding
    side = 5  # [SOT] mia runs to the <side>
    assert torch.allclose(words[0, :side], words[1, :side], atol=1e-5)  # causal: the same prefix, the same states
    assert (words[0, side] - words[1, side]).norm() > 0.2 * words[0, side].norm()  # ... and the side word differs
    calls = toy_text.calls
    again = toy_text.encode_words(texts[::-1], 24)
    assert toy_text.calls == calls and torch.equal(again, words.flip(0))  # cached per (text, n)
    from moviedreamer.errors import UserError

    with pytest.raises(UserError, match="expected 1..248 positions"):
        toy_text.encode_words(texts, 0)


def test_hf_clip_text_gives_word_states_too(tmp_path):
    from encoder_standins import make_hf_clip_text

    from moviedreamer.encoders.longclip import load_descriptor_encoder

    enc = load_descriptor_encoder(make_hf_clip_text(tmp_path / "text"))
    text = "Ben jumps up and down. close-up"
    words = enc.encode_words([text], 12)
    assert words.shape == (1, 12, enc.embed_dim)
    assert torch.allclose(words[0, _eot_row(enc, text)], enc.encode([text]).embeddings[0], atol=1e-4)


def test_swap_left_right_swaps_the_sides_only():
    from moviedreamer.script.shot_text import swap_left_right as mirror_text

    assert mirror_text("Mia runs to the left. wide shot, slow pan right") == "Mia runs to the right. wide shot, slow pan left"
    assert mirror_text("Left of Ben. leftover righteous") == "Right of Ben. leftover righteous"
    assert mirror_text("Ada waves. close-up") == "Ada waves. close-up"


def test_script_shot_texts_follow_the_scenes_in_order(tmp_path):
    from moviedreamer.errors import UserError
    from moviedreamer.script.shot_text import script_shot_texts

    shot = lambda action, camera: {"duration": 1, "action": action, "camera": camera}  # noqa: E731
    story = {"title": "Episode", "scenes": [{"id": "a", "setting": "a beach", "shots": [shot("Mia walks to the left", "wide shot")]},
                                            {"id": "b", "setting": "a room", "shots": [shot("Ben sits down", "close-up"), shot("Kit jumps", "mid shot, zoom in")]}]}
    path = tmp_path / "ep.yaml"
    path.write_text(yaml.safe_dump(story))
    assert script_shot_texts(path, "{action}. {camera}") == ["Mia walks to the left. wide shot", "Ben sits down. close-up", "Kit jumps. mid shot, zoom in"]
    assert script_shot_texts(tmp_path / "missing.yaml", "{action}") is None
    path.write_text(yaml.safe_dump({"scenes": 3}))
    with pytest.raises(UserError, match=r"ep\.yaml:1:1: .*expected"):  # the one story reader names file:line:col
        script_shot_texts(path, "{action}. {camera}")


def test_word_tokens_start_at_zero_and_grow_without_changing_the_first_tokens():
    from moviedreamer.errors import UserError
    from moviedreamer.video.model import I2VConditioning

    torch.manual_seed(0)
    cond = I2VConditioning(8, 16, 6, True, "token")
    torch.nn.init.normal_(cond.descriptor_proj.weight)
    image, desc = torch.randn(3, 8), torch.randn(3, 1 + 4, 6)
    before = cond(image, desc[:, 0])
    assert before.shape == (3, 2, 16)

    from moviedreamer.video.model import AnchoredI2V

    holder = AnchoredI2V.__new__(AnchoredI2V)
    torch.nn.Module.__init__(holder)
    holder.conditioning = cond
    grown = holder.add_descriptor_words(4).conditioning
    assert grown.num_tokens == 6 and grown.descriptor_words == 4
    after = grown(image, desc)
    assert torch.equal(after[:, :2], before) and torch.all(after[:, 2:] == 0)  # zero-initialised word projection
    torch.nn.init.normal_(grown.word_proj.weight)
    moved = grown(image, desc)
    assert moved[:, 2:].abs().amin() >= 0 and moved[:, 2:].abs().sum() > 0
    assert torch.equal(moved[:, 2:], desc[:, 1:] @ grown.word_proj.weight.T + grown.word_proj.bias)
    assert torch.all(grown(image, desc[:, 0])[:, 2:] == 0)  # a pooled-only descriptor has no words
    none = desc.clone()
    none[1] = 0
    assert torch.all(grown(image, none)[1, 1:] == 0)  # no descriptor: neither its token nor its words
    with pytest.raises(UserError, match="descriptor with 2 word states, the model expects 4"):
        grown(image, desc[:, :3])
    with pytest.raises(UserError, match="descriptor_words needs descriptor_mode 'token'"):
        I2VConditioning(8, 16, 6, True, "add", 4)


def test_the_stage_trains_on_the_script_phrases_mirrored_with_the_frames(tmp_path, monkeypatch):
    from test_video_train import make_workdir, stage_config

    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import ShardIndex
    from moviedreamer.train.stages import i2v as stage_module

    root, data = make_workdir(tmp_path)
    index = ShardIndex(data)
    path = index.path(1, ".yaml")
    story = yaml.safe_load(path.read_text())
    for shot in story["scenes"][0]["shots"]:
        shot["action"], shot["camera"] = "Ada runs to the left", "wide shot, slow pan right"
    path.write_text(yaml.safe_dump(story))
    stage = stage_module.I2VStage(StageConfig.model_validate(stage_config(root, data, "unused", descriptor_words=3)))
    stage.model_words = 3
    samples = stage.samples(index.load(1, stage.keys), np.random.default_rng(0))
    assert {s["text"] for s in samples} == {"Ada runs to the left. wide shot, slow pan right"}
    seen = []
    real = stage_module.descriptor_inputs

    def spy(encoder, texts, words):
        seen.extend(texts)
        out = real(encoder, texts, words)
        assert out.shape == (len(texts), 1 + words, encoder.embed_dim)
        return out

    monkeypatch.setattr(stage_module, "descriptor_inputs", spy)
    torch.manual_seed(0)
    batch = stage.collate(samples * 40, torch.device("cpu"), torch.float32)
    assert batch["descriptor"].shape[1:] == (4, stage.descriptor.embed_dim)
    mirrored = sum(t == "Ada runs to the right. wide shot, slow pan left" for t in seen)
    assert 20 <= mirrored <= 60 and mirrored + sum(t == samples[0]["text"] for t in seen) == 80
    seen.clear()
    stage.opts.hflip = False
    stage.collate(samples * 4, torch.device("cpu"), torch.float32)
    assert set(seen) == {samples[0]["text"]}


def test_a_model_with_descriptor_words_trains_exports_and_samples_from_text(tmp_path):
    from test_video_train import make_workdir, stage_config, train_in_process, write

    from moviedreamer.encoders.clip_vision import load_vision_encoder
    from moviedreamer.encoders.longclip import load_descriptor_encoder
    from moviedreamer.vae import load_vae
    from moviedreamer.video.model import AnchoredI2V
    from moviedreamer.video.sampler import AnchoredSampler

    root, data = make_workdir(tmp_path)
    train_in_process(write(root, "words", stage_config(root, data, "words", descriptor_words=3)))
    model = AnchoredI2V.from_pretrained(root / "words" / "export")
    assert model.conditioning.descriptor_words == 3 and model.conditioning.num_tokens == 5
    assert model.conditioning.word_proj.weight.abs().sum() > 0  # trained away from its zero start
    sampler = AnchoredSampler(model, load_vae(root / "vae"), load_vision_encoder(root / "vision"), load_descriptor_encoder(root / "text"))
    key = np.zeros((16, 16, 3), np.uint8)
    key[4:10, 4:10] = 200
    left = np.stack(list(sampler.frames(key, 4, "walks to the left. wide shot", seed=0)))
    right = np.stack(list(sampler.frames(key, 4, "walks to the right. wide shot", seed=0)))
    assert left.shape == (4, 16, 16, 3) and not np.array_equal(left[1:], right[1:])  # the words reach the frames
