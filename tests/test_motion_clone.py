"""MotionClone on a tiny random I2V: the attention taps see every temporal attention and leave the UNet as it was,
the dominant-entry mask, the inversion's round trip, the reference read once per file content, and guidance only on
the guided steps of a shot with a reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moviedreamer.media import ClipWriter
from moviedreamer.video.motion_clone import (
    MotionCloner,
    attention_layers,
    clone_energy,
    resample_clip,
    shift_maps,
    tap_attention,
    top_k_mask,
)
from video_standins import image, tiny_sampler

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sampler():
    return tiny_sampler()


def moving_square(n: int = 8, size: int = 16, step: int = 1) -> np.ndarray:
    frames = np.full((n, size, size, 3), 200, np.uint8)
    for t in range(n):
        x = 2 + step * t
        frames[t, 6:10, x : x + 4] = (200, 30, 30)
    return frames


def write_clip(path, frames, fps: int = 8):
    with ClipWriter(path, fps, frames.shape[2], frames.shape[1]) as w:
        for f in frames:
            w.write(f)
    return path


def unet_out(sampler, x):
    m = sampler.model
    cond = torch.zeros((1, x.shape[1], m.latent_channels, *x.shape[-2:]))
    tokens = m.tokens(torch.zeros(1, m.conditioning.config.image_embed_dim))
    from moviedreamer.video.model import time_ids

    return m.predict_v(x, torch.tensor([1.0]), cond, tokens, time_ids(8, 32, 0.0))


def test_taps_see_every_temporal_attention_and_leave_the_unet_as_it_was(sampler):
    x = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    before_out = unet_out(sampler, x)
    before = {k: type(v) for k, v in sampler.model.unet.attn_processors.items()}
    got = {}
    with tap_attention(sampler.model.unet, "temporal", lambda n, p: got.__setitem__(n, p)):
        tapped_out = unet_out(sampler, x)
    layers = attention_layers(sampler.model.unet, "temporal")
    assert set(got) == set(layers) and len(layers) >= 2
    for name, p in got.items():
        assert p.shape[-2:] == (4, 4)  # frames x frames, per position and head
        assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-5)
    assert torch.allclose(tapped_out, before_out, atol=1e-5)  # the plain processor computes the same attention
    assert {k: type(v) for k, v in sampler.model.unet.attn_processors.items()} == before
    assert all("get_attention_scores" not in vars(a) for a in layers.values())


def test_the_mask_keeps_the_dominant_entries_and_the_energy_is_zero_on_the_reference():
    maps = torch.softmax(torch.randn(6, 2, 4, 4), -1)
    mask = top_k_mask(maps, 1)
    assert mask.sum(-1).eq(1).all() and (maps * mask).amax(-1).eq(maps.amax(-1)).all()
    assert top_k_mask(maps, 9).all()  # k past the frames: every entry
    targets = {"l": (maps, mask.float(), 2)}
    assert clone_energy({"l": maps.reshape(-1, 4, 4)}, targets, 4).item() == 0.0
    assert clone_energy({"l": maps.flip(-1).reshape(-1, 4, 4)}, targets, 4).item() > 0.0
    moved, valid = shift_maps(maps, (2, 3), 1, -1)
    grid, out = maps.view(2, 3, 2, 4, 4), moved.view(2, 3, 2, 4, 4)
    assert torch.equal(out[1, 0], grid[0, 1]) and valid.view(2, 3)[0].sum() == 0 and valid.view(2, 3)[:, 2].sum() == 0


def test_the_reference_is_resampled_to_the_shot():
    frames = moving_square(8)
    out = resample_clip(frames, 8.0, 4, 4.0, (16, 16))  # half the frame rate: every other frame
    assert out.shape == (4, 16, 16, 3) and np.array_equal(out[1], frames[2])
    held = resample_clip(frames[:2], 8.0, 5, 8.0, (8, 8))  # shorter than the shot: its last frame held
    assert held.shape == (5, 8, 8, 3) and np.array_equal(held[4], held[1])


def test_inversion_carries_the_latents_back_where_sampling_returns_them(sampler):
    s = sampler.with_settings(steps=24, clone_sigma=0.5)
    cloner = MotionCloner(sampler)
    x0 = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.5
    xt = cloner.invert(x0, 0.5, s)
    # back down the same grid with the same Euler steps
    cond, tokens = cloner._null(4, x0)
    ids = cloner._ids(s)
    grid = sorted(float(v) for v in cloner._sigmas(s) if 0 < float(v) < 0.5)[::-1]
    x, prev = xt.clone(), 0.5
    with torch.no_grad():
        for nxt in grid:
            d = sampler.model.denoise(x, torch.tensor([prev]), cond, tokens, ids)
            x = x + (nxt - prev) * (x - d) / prev
            prev = nxt
    err = (x - x0).pow(2).mean().sqrt() / x0.pow(2).mean().sqrt()
    noised = (x0 + 0.5 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2)) - x0).pow(2).mean().sqrt() / x0.pow(2).mean().sqrt()
    assert err < 0.1 and err < 0.2 * noised  # the stated bound: within 10 % of the latents' scale


def test_a_reference_guides_only_the_guided_steps_and_is_read_once(sampler, tmp_path, monkeypatch):
    from moviedreamer.video import motion_clone

    ref = write_clip(tmp_path / "ref.mp4", moving_square(8))
    key = image(3)
    cond = {"motion_reference": str(ref)}
    sampler.clone_cache, sampler._cloner = tmp_path / "cache", None
    calls = []
    original = MotionCloner.adjust

    def spy(self, v, *a, **k):
        calls.append(1)
        return original(self, v, *a, **k)

    monkeypatch.setattr(MotionCloner, "adjust", spy)
    plain = np.stack(list(sampler.frames(key, 4, None, seed=1)))
    assert calls == []
    guided = np.stack(list(sampler.frames(key, 4, cond, seed=1, clone_share=0.67, clone_weight=0.5)))
    assert len(calls) == round(sampler.settings.steps * 0.67) and not np.array_equal(plain, guided)
    calls.clear()
    off = np.stack(list(sampler.frames(key, 4, cond, seed=1, clone_weight=0.0)))
    assert calls == [] and np.array_equal(off, plain)
    # read once: the second shot with the same file takes the maps from the cache
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    monkeypatch.setattr("moviedreamer.media.read_frames", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read again")))
    again = np.stack(list(sampler.frames(key, 4, cond, seed=1, clone_share=0.67, clone_weight=0.5)))
    assert np.array_equal(again, guided)
    assert motion_clone.file_digest(ref) == motion_clone.file_digest(ref)
    # other weights (the renderer's fingerprint of its files) are other maps: read afresh, not taken from the cache
    from moviedreamer.video.sampler import I2VClipRenderer

    I2VClipRenderer(sampler, fingerprint="other-weights")
    monkeypatch.undo()
    np.stack(list(sampler.frames(key, 4, cond, seed=1, clone_share=0.67, clone_weight=0.5)))
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_motion_clone_runs_on_an_svd_folder(tmp_path):
    """The paper profile's clip model is SVD: the same taps and guidance on a tiny SVD-format stand-in."""
    from moviedreamer.encoders.clip_vision import load_hf_clip_vision
    from moviedreamer.vae import load_vae
    from moviedreamer.video.model import AnchoredI2V
    from moviedreamer.video.sampler import AnchoredSampler
    from video_standins import make_svd_folder

    svd = make_svd_folder(tmp_path / "stable-video-diffusion-img2vid-xt", image_size=32)
    model = AnchoredI2V.from_svd(svd)
    sampler = AnchoredSampler(model, load_vae(svd / "vae"), load_hf_clip_vision(svd / "image_encoder"), clone_cache=tmp_path / "cache")
    assert len(attention_layers(model.unet, "temporal")) >= 2 and attention_layers(model.unet, "cross")
    frames = moving_square(8, size=32, step=2)
    ref = write_clip(tmp_path / "ref.mp4", frames)
    opts = dict(steps=2, noise_aug=0.0, guidance_min=1.0, guidance_max=1.0, clone_share=0.5, clone_weight=0.5)
    key = image(9, size=32)
    plain = np.stack(list(sampler.frames(key, 4, None, seed=2, **opts)))
    guided = np.stack(list(sampler.frames(key, 4, {"motion_reference": str(ref)}, seed=2, **opts)))
    assert guided.shape == plain.shape == (4, 32, 32, 3) and not np.array_equal(plain, guided)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1


def test_flow_follow_is_high_for_the_same_motion_and_low_for_a_still_clip_noise_or_the_opposite():
    from moviedreamer.eval.motion_follow import flow_follow, read_reference

    ref = moving_square(8, size=32, step=2)
    other_scene = ref.copy()
    other_scene[ref[..., 1] == 200] = (40, 160, 60)  # another background, the same move
    still = np.repeat(ref[:1], 8, axis=0)
    noise = np.random.default_rng(0).integers(0, 256, ref.shape, dtype=np.uint8)
    backwards = ref[::-1].copy()
    assert flow_follow(ref, ref) > 0.99 and flow_follow(other_scene, ref) > 0.9
    assert flow_follow(still, ref) == 0.0 and abs(flow_follow(noise, ref)) < 0.5 and flow_follow(backwards, ref) < -0.5


def test_eval_compares_the_shots_with_a_reference_and_only_those(tmp_path):
    from types import SimpleNamespace

    from moviedreamer.eval.run import stream_shots

    moving = moving_square(8, size=32, step=2)
    ref = write_clip(tmp_path / "ref.mp4", moving_square(16, size=32, step=1), fps=16)  # twice the rate: every other frame
    movie = write_clip(tmp_path / "movie.mp4", np.concatenate([moving, np.repeat(moving[:1], 8, axis=0)]))
    timeline = [SimpleNamespace(index=0, n_frames=8, end_frame=8), SimpleNamespace(index=1, n_frames=8, end_frame=16)]
    shots = stream_shots(movie, timeline, fps=8, references={0: ref, 1: ref})
    assert shots[0].follow["flow_follow"] > 0.9 and shots[1].follow["flow_follow"] == 0.0  # the still shot does not follow
    assert "action_agrees" not in shots[0].follow  # no judge given: flow only
    assert stream_shots(movie, timeline, fps=8)[0].follow is None


def test_a_shot_with_a_reference_plans_and_reports_its_guidance_work(sampler, tmp_path):
    from moviedreamer.video.sampler import I2VClipRenderer
    from moviedreamer.video.work import CLONE_ROWS

    ref = write_clip(tmp_path / "ref.mp4", moving_square(8))
    sampler.clone_cache, sampler._cloner = None, None
    renderer = I2VClipRenderer(sampler, clone_share=0.67, clone_weight=0.5)
    plain = sum(w.cost for w in renderer.work(6))
    cond = {"motion_reference": str(ref)}
    cloned = sum(w.cost for w in renderer.work(6, cond))
    assert cloned == pytest.approx(plain * (1 + CLONE_ROWS * 0.67))  # unguided segments: 1 row a step

    class Meter:
        done = 0.0

        def advance(self, units):
            self.done += units

        def segment_done(self, tried):
            pass

    meter = Meter()
    list(renderer.render(image(4), 6, cond, seed=0, fps=8, progress=meter))
    assert meter.done == pytest.approx(cloned)
