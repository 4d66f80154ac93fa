"""The anchored I2V sampler on a tiny random model: shapes and determinism, anchoring (cross-attention always on
the keyframe while the concatenated latent moves on, no VAE re-encode), overlap blending at the joins, the
end-frame instruction for the first tau steps only, and the pipeline's ClipRenderer protocol."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from video_standins import image, tiny_sampler


torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sampler():
    return tiny_sampler()


def spy_unet(sampler):
    """Record every UNet call: (cross-attention tokens, concatenated latents)."""
    calls = []
    unet = sampler.model.unet
    original = unet.forward
    c = sampler.model.latent_channels

    def forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True):
        calls.append((encoder_hidden_states.detach().clone(), sample[:, :, c:].detach().clone(), added_time_ids.detach().clone()))
        return original(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=return_dict)

    unet.forward = forward
    return calls, lambda: setattr(unet, "forward", original)


def test_a_shot_has_the_asked_frames_and_the_same_seed_gives_the_same_clip(sampler):
    key = image(1)
    for n in (1, 3, 9):
        frames = list(sampler.frames(key, n, None, seed=5))
        assert len(frames) == n and all(f.shape == (16, 16, 3) and f.dtype == np.uint8 for f in frames)
    a = np.stack(list(sampler.frames(key, 6, None, seed=5)))
    b = np.stack(list(sampler.frames(key, 6, None, seed=5)))
    c = np.stack(list(sampler.frames(key, 6, None, seed=6)))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # classifier-free guidance: one batched UNet call of 2 x frames per step
    calls, undo = spy_unet(sampler)
    try:
        g = list(sampler.frames(key, 4, None, seed=5, guidance_min=1.0, guidance_max=2.5))
    finally:
        undo()
    assert len(g) == 4 and len(calls) == sampler.settings.steps and calls[0][1].shape[:2] == (2, 4)
    assert calls[0][0][0].abs().sum() == 0 and calls[0][1][0].abs().sum() == 0  # the null condition: zeros


def test_every_segment_attends_to_the_keyframe_while_the_concat_latent_moves_on(sampler):
    key = image(2)
    sf = float(sampler.vae.config.scaling_factor)
    encodes = []
    original_encode = sampler.vae.encode
    sampler.vae.encode = lambda x, *a, **k: (encodes.append(len(x)), original_encode(x, *a, **k))[1]
    calls, undo = spy_unet(sampler)
    record = []
    try:
        chunks = list(sampler.latents(key, 10, "Mia runs. wide shot", seed=3, record=record))
    finally:
        undo()
        sampler.vae.encode = original_encode
    steps = sampler.settings.steps
    assert [(r.start, r.length) for r in record] == [(0, 4), (2, 4), (4, 4), (6, 4)]  # overlap 2
    assert len(calls) == steps * len(record)
    # cross-attention: the keyframe's CLIP embedding (+ descriptor) in every call of every segment
    key_tokens = sampler.model.tokens(sampler.image_embeds(torch.from_numpy(key).permute(2, 0, 1)[None].float() / 127.5 - 1),
                                      sampler.descriptor.encode(["Mia runs. wide shot"]).embeddings)
    for tokens, _, _ in calls:
        assert torch.equal(tokens, key_tokens)
    # concatenated latent: segment n's is the previous segment's latent at the join, taken as it is (noise_aug 0
    # here): no decode -> encode round trip (the VAE encoded the keyframe once, nothing else)
    assert encodes == [1]
    latents = torch.cat(chunks)
    concat_per_segment = [calls[n * steps][1][0, 0] for n in range(len(record))]
    for n, r in enumerate(record):
        assert torch.allclose(concat_per_segment[n], latents[r.start] / sf, atol=1e-6)
        for i in range(steps):
            assert torch.equal(calls[n * steps + i][1][0, 0], concat_per_segment[n])
    assert all(not torch.allclose(concat_per_segment[n], concat_per_segment[n + 1]) for n in range(len(record) - 1))

    # the baseline the drift figure compares with: anchored on the last frame's CLIP embedding instead
    calls, undo = spy_unet(sampler)
    try:
        list(sampler.latents(key, 10, "Mia runs. wide shot", seed=3, anchor="last-frame"))
    finally:
        undo()
    assert torch.equal(calls[0][0], key_tokens) and not torch.equal(calls[steps][0], key_tokens)


def test_segments_overlap_and_their_joins_are_cross_faded(sampler):
    from moviedreamer.video.conditioning import encode_latents, to_pixels

    key = image(3)
    record = []
    latents = torch.cat(list(sampler.latents(key, 10, None, seed=4, record=record)))
    assert len(latents) == 10 and len(record) == 4
    assert torch.allclose(latents[0], encode_latents(sampler.vae, to_pixels(key))[0], atol=1e-6)  # frame 0: the keyframe
    for prev, cur in zip(record, record[1:]):
        k, off = prev.start + prev.length - cur.start, cur.start - prev.start
        assert k == sampler.settings.overlap == cur.known
        # frame 0 of a segment is exactly the frame the previous one ended on (emitted once); the shared frames
        # after it fade from the previous segment's frames to the new ones
        assert torch.equal(latents[cur.start], prev.final[off])
        for j in range(1, k):
            w = 1 - j / k
            assert torch.allclose(latents[cur.start + j], w * prev.final[off + j] + (1 - w) * cur.raw[j], atol=1e-5)
            assert not torch.allclose(latents[cur.start + j], cur.raw[j], atol=1e-3)  # a fade, not a cut
        # and the previous segment's emitted frames are its final latents
        assert torch.equal(latents[prev.start + (prev.start > 0) : cur.start + 1], prev.final[(prev.start > 0) : off + 1])
    # without overlap guidance, the raw first frame of a later segment would start elsewhere than its predecessor ended
    assert all(not torch.allclose(cur.raw[0], prev.final[cur.start - prev.start], atol=1e-3) for prev, cur in zip(record, record[1:]))


def test_end_frame_is_used_only_in_the_first_tau_steps(sampler):
    key, end = image(4), image(5)
    sf = float(sampler.vae.config.scaling_factor)
    from moviedreamer.video.conditioning import encode_latents, to_pixels

    end_lat = encode_latents(sampler.vae, to_pixels(end))[0] / sf
    calls, undo = spy_unet(sampler)
    try:
        with_end = torch.cat(list(sampler.latents(key, 6, None, end_frame=end, seed=7, tau=2, steps=4)))
    finally:
        undo()
    assert len(calls) == 8  # 2 segments x 4 steps; the end frame belongs to the last segment only
    for i, (_, concat, _) in enumerate(calls):
        last_segment, step = i >= 4, i % 4
        at_last = concat[0, -1]
        if last_segment and step < 2:
            assert torch.allclose(at_last, end_lat, atol=1e-6)
        else:
            assert torch.equal(at_last, concat[0, 0])  # the conditioning frame, as without an end frame
    plain = torch.cat(list(sampler.latents(key, 6, None, seed=7, steps=4)))
    tau0 = torch.cat(list(sampler.latents(key, 6, None, end_frame=end, seed=7, tau=0, steps=4)))
    assert torch.equal(tau0, plain)
    assert not torch.allclose(with_end, plain)
    assert torch.equal(with_end[:3], plain[:3])  # the first segment's emitted frames do not see it


def test_clip_renderer_follows_the_pipeline_protocol():
    from moviedreamer.pipeline.components import ClipRenderer
    from moviedreamer.video.conditioning import ClipCondition
    from moviedreamer.video.sampler import I2VClipRenderer

    renderer = I2VClipRenderer(tiny_sampler(), fingerprint="abc")
    assert list(inspect.signature(renderer.render).parameters) == [p for p in inspect.signature(ClipRenderer.render).parameters if p != "self"]
    key, end = image(6), image(7)
    for cond in (None, ClipCondition(text="Ada waves. close-up"), torch.randn(16), ClipCondition(descriptor=np.ones(16, np.float32), motion_bucket=200.0)):
        frames = list(renderer.render(key, 5, cond, 11, 8, end_frame=end))
        assert len(frames) == 5 and frames[0].shape == key.shape and frames[0].dtype == np.uint8
    a = np.stack(list(renderer.render(key, 5, ClipCondition(text="Ada waves. close-up"), 11, 8)))
    b = np.stack(list(renderer.render(key, 5, ClipCondition(text="Bo sits. wide shot"), 11, 8)))
    assert not np.array_equal(a, b)  # the descriptor reaches the model


def test_bad_inputs_are_clear_errors(sampler):
    from moviedreamer.errors import UserError

    with pytest.raises(UserError, match="multiple of the VAE's downsampling factor 2"):
        list(sampler.frames(image(1, size=15), 3))
    with pytest.raises(UserError, match="overlap must be in"):
        list(sampler.frames(image(1), 9, overlap=4))
    with pytest.raises(UserError, match="unknown sampler setting"):
        list(sampler.frames(image(1), 3, stepz=3))
    with pytest.raises(UserError, match="uint8"):
        list(sampler.frames(image(1).astype(np.float32), 3))
    with pytest.raises(UserError, match="end frame is"):
        list(sampler.frames(image(1), 3, end_frame=image(2, size=8)))


def test_the_movie_pipeline_renders_its_clips_with_it(tmp_path):
    """generate-movie's orchestration with the real I2V renderer in place of its stand-in: every shot's clip has the
    shot's frames, and a `transition: continuous` shot gets the next keyframe as its end frame."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import pipeline_standins

    from moviedreamer.pipeline.movie import MovieDreamerPipeline
    from moviedreamer.media import read_frames
    from moviedreamer.script import load_story
    from moviedreamer.video.sampler import I2VClipRenderer

    story = tmp_path / "story.yaml"
    story.write_text("title: T\nfps: 8\nresolution: [64, 64]\nseed: 1\ncharacters:\n  - {id: mia, name: Mia, description: a girl}\n"
                     "scenes:\n  - id: s\n    setting: a beach\n    shots:\n"
                     "      - {duration: 1.25, characters: [mia], action: Mia runs, camera: wide shot, transition: continuous}\n"
                     "      - {duration: 0.5, characters: [mia], action: Mia stops, camera: close-up}\n")
    renderer = I2VClipRenderer(tiny_sampler(descriptor=False), fingerprint="i2v-test")
    ends = []
    render = renderer.render
    renderer.render = lambda key, n, cond, seed, fps, end_frame=None, **kw: (ends.append(end_frame is not None), render(key, n, cond, seed, fps, end_frame, **kw))[1]
    components = pipeline_standins.components()
    components.clips = renderer
    MovieDreamerPipeline(components)(load_story(story), tmp_path / "out", quiet=True)
    frames = np.stack(list(read_frames(tmp_path / "out" / "movie.mp4")))
    assert frames.shape == (10 + 4, 64, 64, 3) and ends == [True, False]


def test_noise_share_starts_the_frames_from_correlated_noise(sampler):
    calls, restore = spy_unet(sampler)
    first = []
    unet = sampler.model.unet
    inner = unet.forward

    def record(sample, *a, **k):
        if not first:
            first.append(sample[0, :, : sampler.model.latent_channels].detach().clone())
        return inner(sample, *a, **k)

    def initial_noise(share):
        first.clear()
        unet.forward = record
        try:
            list(sampler.latents(image(2), 4, seed=5, noise_share=share, steps=1))
        finally:
            unet.forward = inner
        x = first[0][1:].flatten(1)  # [frames, C*h*w], the first step's input (frame 0 is pinned to the keyframe)
        x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
        corr = (x @ x.T) / x.shape[1]
        return corr[~torch.eye(len(x), dtype=torch.bool)].mean().item()

    try:
        plain, shared = initial_noise(0.0), initial_noise(0.8)
    finally:
        restore()
    assert abs(plain) < 0.1 and 0.7 < shared < 0.9  # frame-to-frame correlation = the shared fraction
    with pytest.raises(Exception, match="noise_share must be in"):
        sampler.with_settings(noise_share=1.0)


def test_guidance_segments_guides_only_the_first_segments(sampler):
    s = sampler.settings
    n_frames = s.num_frames + 2 * (s.num_frames - s.overlap)  # three segments
    key = image(3)
    calls, undo = spy_unet(sampler)
    try:
        all_guided = np.stack(list(sampler.frames(key, n_frames, None, seed=2, guidance_min=2.0, guidance_max=2.0)))
        rows_all = [c[1].shape[0] for c in calls]
        calls.clear()
        first = np.stack(list(sampler.frames(key, n_frames, None, seed=2, guidance_min=2.0, guidance_max=2.0, guidance_segments=1)))
        rows_first = [c[1].shape[0] for c in calls]
    finally:
        undo()
    steps = s.steps
    assert rows_all == [2] * (3 * steps)  # null + conditional rows in every step of every segment
    assert rows_first == [2] * steps + [1] * (2 * steps)  # guided segment 1, one pass per step after it
    seg1 = s.num_frames
    assert np.array_equal(first[:seg1 - 1], all_guided[:seg1 - 1])  # the same first segment (its last frame is blended on)
    assert not np.array_equal(first[seg1:], all_guided[seg1:])
    with pytest.raises(Exception, match="guidance_segments"):
        sampler.with_settings(guidance_segments=-1)


def test_action_guidance_adds_a_row_without_the_descriptor_token(sampler):
    """Three rows per guided step: null, the anchor without the descriptor token, everything; the outputs combine as
    null + g (no descriptor - null) + g_a (all - no descriptor), so g_a = g is SVD's guidance exactly."""
    from moviedreamer.video.conditioning import ClipCondition

    s = sampler.settings
    key, cond = image(4), ClipCondition(descriptor=torch.randn(16))
    calls, undo = spy_unet(sampler)
    try:
        plain = np.stack(list(sampler.frames(key, s.num_frames, cond, seed=3, guidance_min=2.0, guidance_max=2.0)))
        calls.clear()
        same = np.stack(list(sampler.frames(key, s.num_frames, cond, seed=3, guidance_min=2.0, guidance_max=2.0, action_guidance=2.0)))
        tokens = calls[0][0]  # [rows, N, D]
        calls.clear()
        strong = np.stack(list(sampler.frames(key, s.num_frames, cond, seed=3, guidance_min=2.0, guidance_max=2.0, action_guidance=4.0)))
    finally:
        undo()
    assert tokens.shape[0] == 3 and tokens[0].abs().sum() == 0  # null row
    assert torch.equal(tokens[1, 0], tokens[2, 0]) and tokens[1, 1].abs().sum() == 0 and tokens[2, 1].abs().sum() > 0  # [anchor, descriptor]
    assert np.abs(same.astype(int) - plain.astype(int)).max() <= 1  # g_a = g: plain guidance (float rounding only)
    assert not np.array_equal(strong, plain)
    with pytest.raises(Exception, match="action_guidance"):
        sampler.with_settings(action_guidance=-1.0)
    bare = tiny_sampler(descriptor=False)
    with pytest.raises(Exception, match="descriptor_mode"):
        list(bare.frames(key, s.num_frames, None, seed=3, guidance_min=2.0, guidance_max=2.0, action_guidance=3.0))
