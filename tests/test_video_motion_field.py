"""The motion field (video/motion_field.py): the toy world's exact sampling maps, the backward warp and its
composition, the model's folder, and the sampler drawing each segment from the keyframe moved along the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from video_standins import image, tiny_sampler

torch.set_num_threads(1)


def _pattern(h: int = 12, w: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, h, w, generator=g) * 2 - 1


def test_warp_takes_each_pixel_from_where_its_displacement_points():
    from moviedreamer.video.motion_field import warp

    img = _pattern()
    same = warp(img, torch.zeros(1, 12, 16, 2))[0]
    assert torch.allclose(same, img, atol=1e-5)
    d = torch.zeros(1, 12, 16, 2)
    d[..., 0] = 3  # pixel x takes the value at x + 3: the picture moves 3 px left
    moved = warp(img, d)[0]
    assert torch.allclose(moved[:, :, :-3], img[:, :, 3:], atol=1e-5)
    assert not torch.allclose(moved, img, atol=1e-2)


def test_compose_chains_two_maps():
    from moviedreamer.video.motion_field import compose, warp

    outer, inner = torch.zeros(2, 12, 16, 2), torch.zeros(12, 16, 2)
    outer[0, ..., 0], outer[1, ..., 1], inner[..., 0] = 2, 1, 1
    chained, none = compose(outer, inner)
    assert none is None
    assert torch.allclose(chained[0, :, :-3, 0], torch.full((12, 13), 3.0))  # inside the frame: the shifts add up
    assert torch.allclose(chained[1, :-1, :-1], torch.tensor([1.0, 1.0]).expand(11, 15, 2))
    img = _pattern()
    once = warp(img, chained[:1])[0]
    twice = warp(warp(img, inner[None])[0], outer[:1])[0]  # warping by the chain = warping by each in turn
    assert torch.allclose(once[:, :, :10], twice[:, :, :10], atol=1e-5)
    # visibility: seen in the chain where seen in both steps
    inner_seen = torch.ones(12, 16)
    inner_seen[:, 5] = 0  # column 5 of q was hidden in r
    _, seen = compose(outer, inner, torch.ones(2, 12, 16), inner_seen)
    assert seen[0, 0, 3] == 0 and seen[0, 0, 2] == 1 and seen[1, 0, 5] == 0  # p = 3 lands on q = 5 (shift 2); frame 1 moves in y only

@pytest.mark.parametrize("action, move", [("walk", "static"), ("jump", "zoom_in"), ("stand", "pan_left")])
def test_the_toy_worlds_sampling_maps_redraw_a_later_frame_from_an_earlier_one(action, move):
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.world import ShotParams
    from moviedreamer.video.motion_field import warp

    p = ShotParams("park", ("mia",), action, "right" if action == "walk" else None, "medium", move, 4.0, 3)
    first, later = render_frame(p, 2, 8, (128, 128)).image, render_frame(p, 8, 8, (128, 128), source=2)
    grid = np.stack(np.meshgrid(np.arange(128), np.arange(128)), axis=-1).astype(np.float32)
    d = torch.from_numpy(later.source - grid)[None]
    assert float(d.abs().max()) > 0.5  # something moves
    px = lambda a: torch.from_numpy(a).permute(2, 0, 1).float()  # noqa: E731
    redrawn = warp(px(first), d)[0]
    seen = torch.from_numpy(later.source_visible)
    assert 0.3 < float(seen.float().mean()) < 1.0 or move == "static"
    err_warped = (redrawn - px(later.image)).abs().sum(0)[seen].mean()  # what was in view is redrawn exactly
    err_still = (px(first) - px(later.image)).abs().sum(0)[seen].mean()
    assert err_warped < 0.05 * err_still + 1.0, (float(err_warped), float(err_still))


def tiny_field(frames: int = 8, shift: float = 0.0):
    from moviedreamer.video.motion_field import MotionField, MotionFieldConfig

    field = MotionField(MotionFieldConfig(frames=frames, size=16, reader="descriptor", words=2, text_dim=16, block_out_channels=[16, 32]))
    if shift:  # a field that moves everything `shift` model units to the left per frame
        with torch.no_grad():
            field.unet.conv_out.weight.zero_()
            field.unet.conv_out.bias.copy_(torch.tensor([[shift * (k + 1), 0.0, 5.0][i] for k in range(frames - 1) for i in range(3)]))
    return field.eval()


def test_a_motion_field_folder_round_trips(tmp_path):
    from moviedreamer.video.motion_field import MotionField

    field = tiny_field(shift=0.5)
    frame, states = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 3, 16)
    before, seen = field.predict(frame, states)
    assert before.shape == (2, 7, 32, 32, 2) and seen.shape == (2, 7, 32, 32)
    # model units are `scale` px at the model's size (16): at 32 px they are twice as many pixels
    assert torch.allclose(before[0, 0, ..., 0], torch.full((32, 32), 0.5 * 8 * 2))
    assert float(seen.min()) > 0.9  # a fresh field sees everything
    field.save(tmp_path / "mf", dtype=torch.float32)
    back = MotionField.load(tmp_path / "mf")
    assert torch.allclose(back.predict(frame, states)[0], before, atol=1e-5)
    with pytest.raises(Exception, match="not a motion field folder"):
        MotionField.load(tmp_path)


def test_the_sampler_draws_each_segment_from_the_keyframe_moved_along_the_field():
    from moviedreamer.errors import UserError
    from moviedreamer.video.conditioning import encode_latents, to_pixels, to_uint8
    from moviedreamer.video.motion_field import warp

    sampler = tiny_sampler()
    sampler.settings.overlap = 1
    with pytest.raises(UserError, match="motion field"):
        next(sampler.latents(image(3), 7, "Mia walks", seed=1, steps=2, motion_field_sigma=0.0))
    sampler.model.motion_field = tiny_field(frames=4, shift=0.0625)  # half a pixel per frame at 16 px
    lat = torch.cat(list(sampler.latents(image(3), 7, "Mia walks", seed=1, steps=2, motion_field_sigma=0.0)))
    assert lat.shape[0] == 7
    key = to_pixels(image(3))[0]
    d = torch.zeros(7, 16, 16, 2)
    d[..., 0] = 0.5 * torch.arange(7).view(7, 1, 1)  # frame t: t x 0.5 px, across both segments
    want = encode_latents(sampler.vae, warp(key, d).clamp(-1, 1))
    assert torch.allclose(lat[1:], want[1:], atol=1e-4)  # frame 0 is the keyframe's latent
    assert (lat[-1] - lat[1]).abs().mean() > 1e-3  # it moves
    # with a noise level, the clip model draws what the warp cannot show (every step runs, the warp pinned where it
    # sees), and the frames keep the keyframe's own pixels there
    calls = []
    forward = sampler.model.unet_forward
    sampler.model.unet_forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    frames = np.stack(list(sampler.frames(image(3), 7, "Mia walks", seed=1, steps=4, motion_field_sigma=1.0)))
    assert len(calls) == 2 * 4 and sampler.skipped_steps(sampler.with_settings(motion_field_sigma=1.0, steps=4)) == 0
    want = to_uint8(warp(key, d).clamp(-1, 1))
    assert np.abs(frames.astype(int) - want.astype(int)).max() <= 4  # the field sees every pixel (visibility ~0.99)


def test_the_toy_vocabulary_reads_what_decides_a_shots_motion():
    from moviedreamer.toyworld.grammar import MOTION_LABELS, motion_labels
    from moviedreamer.video.motion_field import MotionField, MotionFieldConfig

    read = lambda t: {MOTION_LABELS[i] for i in np.flatnonzero(motion_labels(t))}  # noqa: E731
    assert read("Kit and Lea walk towards the right. wide angle, slow pan left") == {"action:walk", "direction:right", "framing:wide", "move:pan_left"}
    assert read("Mia jumps up and down. close-up") == {"action:jump", "framing:close", "move:static"}
    # nothing it knows: no instruction and no error (validate reports it); a camera naming no move holds still
    assert read("an old fisherman mends his net. at dawn") == {"move:static"}
    assert read("") == set()
    field = MotionField(MotionFieldConfig(frames=4, size=16, block_out_channels=[16, 32], text_dim=len(MOTION_LABELS)))
    states = field.states(None, ["Tom runs to the left. medium shot", "Tom runs to the right. medium shot"])
    assert states.shape == (2, 1, len(MOTION_LABELS)) and not torch.equal(states[0], states[1])
    d, _ = field.predict(torch.zeros(2, 3, 16, 16), states)
    assert d.shape == (2, 3, 16, 16, 2)


def test_train_motion_field_carries_its_checkpoint_resumes_from_it_and_exports_into_a_clip_folder(tmp_path):
    import json

    from moviedreamer.train.fit_motion_field import train_motion_field
    from moviedreamer.video.motion_field import MotionField, MotionFieldConfig

    small = lambda: MotionFieldConfig(frames=4, size=16, block_out_channels=[16, 32])  # noqa: E731
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "moviedreamer_i2v.json").write_text('{"num_frames": 4}')
    train_motion_field(tmp_path / "a", None, steps=2, batch=2, config=small(), ckpt_every=1, carry=tmp_path / "carry", export=clip, sigma=1.0)
    assert (tmp_path / "carry" / "state.pt").is_file()
    assert MotionField.load(clip / "motion_field").config.trained_steps == 2
    assert json.loads((clip / "moviedreamer_i2v.json").read_text())["motion_field_sigma"] == 1.0
    # a new machine: a run folder without a checkpoint continues from the carried one
    train_motion_field(tmp_path / "b", None, steps=3, batch=2, config=small(), ckpt_every=1, carry=tmp_path / "carry")
    log = (tmp_path / "b" / "train.log").read_text()
    assert '"resumed_at": 2' in log and '"steps": 3' in log


def test_the_shot_time_reaches_the_field_and_a_grown_field_predicts_as_before(tmp_path):
    from moviedreamer.toyworld.grammar import MOTION_LABELS
    from moviedreamer.train.fit_motion_field import train_motion_field
    from moviedreamer.video.motion_field import TIME_DIM, MotionField, MotionFieldConfig, time_features

    feats = time_features([0.0, 0.5, 1.0])
    assert feats.shape == (3, TIME_DIM) and not torch.allclose(feats[1], feats[2])  # half a second apart: another phase
    cfg = lambda t: MotionFieldConfig(frames=4, size=16, block_out_channels=[16, 32], text_dim=len(MOTION_LABELS), shot_time=t)  # noqa: E731
    torch.manual_seed(0)
    old = MotionField(cfg(False)).eval()
    with torch.no_grad():
        for p in old.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # not the fresh field's near-constant output
    new = MotionField(cfg(True)).eval()
    new.load_grown(old.state_dict())
    texts, frame = ["Mia jumps. wide shot", "Mia jumps. wide shot"], torch.rand(2, 3, 16, 16) * 2 - 1
    states = new.states(None, texts, [0.0, 0.5])
    assert states.shape == (2, 1, len(MOTION_LABELS) + TIME_DIM)
    before, _ = old.predict(frame, old.states(None, texts))
    grown, _ = new.predict(frame, states)
    assert torch.allclose(grown, before, atol=1e-5)  # the new inputs start at zero weight
    with torch.no_grad():  # once its time weights are trained, the same frame and text at another time move otherwise
        for name, p in new.named_parameters():
            if name.endswith(("attn2.to_k.weight", "attn2.to_v.weight", "class_embedding.linear_1.weight")):
                p[:, len(MOTION_LABELS):] = torch.randn_like(p[:, len(MOTION_LABELS):])
    moved, _ = new.predict(frame, states)
    assert (moved[0] - moved[1]).abs().max() > 1e-3
    # a run started from a narrower checkpoint (--init) grows it and trains on with the segments' start times
    train_motion_field(tmp_path / "a", None, steps=1, batch=2, config=cfg(False), ckpt_every=1)
    train_motion_field(tmp_path / "b", None, steps=1, batch=2, config=cfg(True), ckpt_every=1, init=tmp_path / "a" / "checkpoint" / "state.pt")
    assert '"initialised_from"' in (tmp_path / "b" / "train.log").read_text()
    assert MotionField.load(tmp_path / "b" / "motion_field").config.shot_time


def test_the_sampler_tells_the_field_each_segments_start_time(monkeypatch):
    from moviedreamer.video import motion_field

    sampler = tiny_sampler()
    sampler.settings.overlap = 1
    sampler.model.motion_field = tiny_field(frames=4)
    times = []
    real = motion_field.segment_frames
    monkeypatch.setattr("moviedreamer.video.sampler.segment_frames", lambda *a, **k: times.append(k["start_time"]) or real(*a, **k))
    list(sampler.latents(image(3), 10, "Mia walks", seed=1, steps=1, fps=8, motion_field_sigma=0.0))
    assert times == [0.0, 3 / 8, 6 / 8]  # segments of 4 frames sharing one: they start at frames 0, 3 and 6


def test_without_its_visibility_the_warp_shows_every_pixel(monkeypatch):
    from moviedreamer.video import motion_field
    from moviedreamer.video.conditioning import to_pixels
    from moviedreamer.video.motion_field import segment_frames, warp

    sampler = tiny_sampler()
    field = tiny_field(frames=4, shift=0.0625)
    with torch.no_grad():  # the field says nothing of the later frames was in view
        field.unet.conv_out.bias[2::3] = -5.0
    key = to_pixels(image(3))[0]
    text = torch.zeros(1, 3, 16)  # the tiny field's descriptor states (its prediction here is its biases)
    (maps, seen), frames, _ = segment_frames(field, text, key, None, 4, sampler.vae)
    assert float(seen[1:].max()) < 0.1  # marked unseen: left to the inpainting / the clip model
    (maps, seen), frames, _ = segment_frames(field, text, key, None, 4, sampler.vae, visibility=False)
    assert bool((seen == 1).all())
    assert torch.allclose(frames, warp(key, maps).clamp(-1, 1), atol=1e-6)  # the warp as it is, every pixel
    # the sampler hands the setting on
    sampler.settings.overlap = 1
    sampler.model.motion_field = field
    flags = []
    real = motion_field.segment_frames
    monkeypatch.setattr("moviedreamer.video.sampler.segment_frames", lambda *a, **k: flags.append(k["visibility"]) or real(*a, **k))
    list(sampler.latents(image(3), 4, "Mia walks", seed=1, steps=1, motion_field_sigma=0.0, motion_field_visibility=False))
    assert flags == [False]
