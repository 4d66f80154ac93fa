"""A segment started from its conditioning frame noised to `start_sigma` runs only the schedule's steps below it and
starts as that frame; without it, the whole schedule from pure noise."""

from __future__ import annotations

import torch

from video_standins import image, tiny_sampler

torch.set_num_threads(1)


def count_unet_calls(sampler, **overrides):
    calls = []
    unet = sampler.model.unet
    original = unet.forward

    def forward(*a, **k):
        calls.append(1)
        return original(*a, **k)

    unet.forward = forward
    try:
        lat = torch.cat(list(sampler.latents(image(5), 4, None, seed=1, **overrides)))
    finally:
        unet.forward = original
    return len(calls), lat


def test_a_truncated_schedule_runs_fewer_steps_and_starts_from_the_frame():
    sampler = tiny_sampler(descriptor=False)
    steps = 6
    full, _ = count_unet_calls(sampler, steps=steps, pin_keyframe=False)
    assert full == steps
    sched = sampler.model.make_scheduler()
    sched.set_timesteps(steps)
    sigma = float(sched.sigmas[3]) + 1e-4  # the last three steps start at or below it
    few, lat = count_unet_calls(sampler, steps=steps, start_sigma=sigma, pin_keyframe=False)
    assert few == steps - 3
    assert sum(w.cost for w in sampler.work(4, steps=steps, start_sigma=sigma)) == sum(w.cost for w in sampler.work(4, steps=steps)) / 2
    # a start at the smallest sigma is one step from the frame itself: every frame stays near the keyframe's latent
    tiny = float(sched.sigmas[-2]) + 1e-6
    one, lat = count_unet_calls(sampler, steps=steps, start_sigma=tiny, pin_keyframe=False, noise_aug=0.0)
    from moviedreamer.video.conditioning import encode_latents, to_pixels

    key = encode_latents(sampler.vae, to_pixels(image(5)))[0]
    _, from_noise = count_unet_calls(sampler, steps=steps, pin_keyframe=False, noise_aug=0.0)
    near, far = (lat - key).abs().mean(), (from_noise - key).abs().mean()
    assert one == 1 and near < 0.3 * far
