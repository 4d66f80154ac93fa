"""Fairy's anchor attention (moviedreamer/edit/anchors.py) and InstructPix2Pix's guidance rows (edit/sampler.py), on a
tiny random UNet2DConditionModel: the anchors' keys/values reach every frame's self-attention, the original processors
come back, and each of the three guidance rows carries its own conditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moviedreamer.edit import anchors as anchors_module
from moviedreamer.edit.anchors import (
    anchor_attention,
    pick_anchors,
    self_attention_names,
)
from moviedreamer.edit.model import EditSettings, InstructionEditor
from moviedreamer.edit.sampler import EditSampler, combine_guidance

torch.set_num_threads(1)

TINY_EDIT_UNET = dict(sample_size=8, out_channels=4, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                      up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], block_out_channels=[8, 16], layers_per_block=1,
                      cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)


def tiny_editor(seed: int = 0, **settings) -> InstructionEditor:
    torch.manual_seed(seed)
    s = EditSettings(resolution=16, text_tokens=4, steps=2, **settings)
    return InstructionEditor.build(TINY_EDIT_UNET, s)


class FakeText:
    """Instruction -> fixed random states [1, 4, 16] (the empty text: its own)."""

    tokens, dim = 4, 16

    def __call__(self, texts):
        return torch.stack([torch.randn(4, 16, generator=torch.Generator().manual_seed(sum(map(ord, t)) + 1)) for t in texts])


def unet_outputs(unet, x, text, keys, rest):
    """Anchored: the anchors recorded, then the other frames using them -> [frames, C, h, w] in frame order."""
    out = torch.empty(x.shape[0], 4, *x.shape[2:])
    t = torch.tensor(500)
    with anchor_attention(unet) as cache:
        cache.rows, cache.mode = 1, "record"
        out[keys] = unet(x[keys], t, encoder_hidden_states=text.expand(len(keys), -1, -1)).sample
        cache.mode = "use"
        out[rest] = unet(x[rest], t, encoder_hidden_states=text.expand(len(rest), -1, -1)).sample
    return out


@torch.no_grad()
def test_an_anchor_frame_changes_every_frame_and_another_frame_only_itself():
    unet = tiny_editor().unet.eval()
    frames = 6
    keys = pick_anchors(frames, 3)
    rest = [i for i in range(frames) if i not in keys]
    assert keys == [0, 2, 5] or keys == [0, 3, 5]
    x = torch.randn(frames, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    text = FakeText()(["make it snowy"])
    base = unet_outputs(unet, x, text, keys, rest)

    other = x.clone()
    other[rest[0]] += 1.0  # a frame that is not an anchor
    out = unet_outputs(unet, other, text, keys, rest)
    changed = (out - base).abs().flatten(1).amax(1) > 1e-5
    assert changed.tolist() == [i == rest[0] for i in range(frames)]

    anchor = x.clone()
    anchor[keys[1]] += 1.0  # an anchor frame: every frame's self-attention reads it
    out = unet_outputs(unet, anchor, text, keys, rest)
    assert ((out - base).abs().flatten(1).amax(1) > 1e-5).all()

    # without the processor the frames are independent: the same change reaches only its own frame
    plain = unet(x, torch.tensor(500), encoder_hidden_states=text.expand(frames, -1, -1)).sample
    plain2 = unet(anchor, torch.tensor(500), encoder_hidden_states=text.expand(frames, -1, -1)).sample
    assert ((plain2 - plain).abs().flatten(1).amax(1) > 1e-5).tolist() == [i == keys[1] for i in range(frames)]


@torch.no_grad()
def test_every_self_attention_of_every_frame_attends_to_the_recorded_anchor_keys(monkeypatch):
    unet = tiny_editor().unet.eval()
    x = torch.randn(5, 8, 8, 8)
    text = FakeText()(["give everyone a red hat"]).expand(5, -1, -1)
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        calls.append((q.shape, k.clone(), v.clone()))
        return real(q, k, v, *a, **kw)

    monkeypatch.setattr(anchors_module.F, "scaled_dot_product_attention", spy)
    layers = self_attention_names(unet)
    assert len(layers) == 4  # the down block, the mid block, the up block (two)
    with anchor_attention(unet) as cache:
        cache.rows, cache.mode = 1, "record"
        unet(x[:2], torch.tensor(10), encoder_hidden_states=text[:2])
        recorded = {name: (k.clone(), v.clone()) for name, (k, v) in cache.kv.items()}
        assert sorted(recorded) == sorted(layers)
        calls.clear()
        cache.mode = "use"
        unet(x[2:], torch.tensor(10), encoder_hidden_states=text[2:])
    self_calls = [c for c in calls if c[1].shape[2] != text.shape[1]]  # cross-attention has the text's 4 keys
    assert len(self_calls) == len(layers)
    anchors_kv = list(recorded.values())
    for (q_shape, k, v) in self_calls:
        assert q_shape[0] == 3 and k.shape[2] == 2 * q_shape[2]  # 3 frames' queries over 2 anchors' tokens
        match = [(ak, av) for ak, av in anchors_kv if ak.shape[1:] == k.shape[1:]]
        assert any(torch.equal(k[i : i + 1], ak) and torch.equal(v[i : i + 1], av) for ak, av in match for i in range(3))
        assert all(torch.equal(k[i], k[0]) for i in range(3))  # the same anchors for every frame


def test_the_original_processors_come_back_also_after_an_error():
    unet = tiny_editor().unet
    before = dict(unet.attn_processors)
    with anchor_attention(unet):
        assert all(type(p).__name__ == "AnchorAttnProcessor" for n, p in unet.attn_processors.items() if n.endswith("attn1.processor"))
        assert all(p is before[n] for n, p in unet.attn_processors.items() if n.endswith("attn2.processor"))
    assert all(p is before[n] for n, p in unet.attn_processors.items())
    with pytest.raises(RuntimeError), anchor_attention(unet):
        raise RuntimeError("boom")
    assert all(p is before[n] for n, p in unet.attn_processors.items())


def test_anchor_frames_are_spread_over_the_shot():
    assert pick_anchors(48, 3) == [0, 24, 47]
    assert pick_anchors(2, 3) == [0, 1]
    assert pick_anchors(9, 1) == [4]
    assert pick_anchors(9, 0) == []


def test_the_guidance_formula_combines_the_three_rows():
    full, image, null = torch.tensor([3.0]), torch.tensor([2.0]), torch.tensor([1.0])
    # e = e(z,0,0) + s_I (e(z,c_I,0) - e(z,0,0)) + s_T (e(z,c_I,c_T) - e(z,c_I,0))
    assert combine_guidance(full, image, null, 1.5, 7.5).item() == pytest.approx(1 + 1.5 * 1 + 7.5 * 1)
    assert combine_guidance(full, image, null, 1.0, 1.0).item() == pytest.approx(3.0)  # plain conditional prediction
    assert combine_guidance(full, image, null, 0.0, 0.0).item() == pytest.approx(1.0)  # unconditional


@torch.no_grad()
def test_the_three_rows_carry_source_and_text_as_instructpix2pix_has_them(monkeypatch):
    from video_standins import tiny_vae

    editor = tiny_editor()
    text = FakeText()
    sampler = EditSampler(editor, tiny_vae(), text)
    seen = []
    real = editor.eps

    def spy(noisy, source, t, states):
        seen.append((source.clone(), states.clone()))
        return real(noisy, source, t, states)

    monkeypatch.setattr(editor, "eps", spy)
    frames = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    out = sampler.edit(frames, "make it snowy", anchors=2, image_guidance=1.5, text_guidance=5.0, batch_frames=2)
    assert out.shape == frames.shape and out.dtype == np.uint8
    src = sampler.source_latents(frames)
    instr, null = text(["make it snowy"])[0], text([""])[0]
    source, states = seen[0]  # the anchors' pass: 3 rows x 2 anchor frames [0, 3], row after row
    assert source.shape[0] == 6
    assert torch.allclose(source[0:2], src[[0, 3]]) and torch.allclose(source[2:4], src[[0, 3]]) and (source[4:6] == 0).all()
    assert all(torch.equal(s, instr) for s in states[0:2]) and all(torch.equal(s, null) for s in states[2:6])
    assert len(seen) == 2 * 2  # per step: the anchors, then the two other frames in one batch
    seen.clear()
    sampler.edit(frames, "make it snowy", anchors=0, image_guidance=1.0, text_guidance=1.0, batch_frames=4)
    assert [s.shape[0] for s, _ in seen] == [4, 4]  # one row when both scales are 1; no anchors: all frames in one batch
