"""A residual clip model (I2VSettings.residual) denoises each frame's difference from its segment's conditioning
frame: trained on those differences, and sampled as the conditioning frame plus what it denoises — so a model that
predicts "no change" returns the conditioning frame on every frame, where a plain model returns nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_video_train import make_workdir, stage_config
from video_standins import image, tiny_sampler

torch.set_num_threads(1)


def predicts_no_change(model):
    """A stand-in UNet whose denoised estimate is 0 at every noise level: v = x_in / sigma (v-prediction, EDM
    scaling; the sampler's timesteps are ln(sigma) / 4)."""
    c = model.unet.config.out_channels

    def unet_forward(model_input, cond, timestep, tokens, time_ids):
        sigma = torch.exp(4 * torch.as_tensor(timestep, dtype=torch.float32)).reshape(-1, 1, 1, 1, 1)
        return model_input[:, :, :c] / sigma

    model.unet_forward = unet_forward


@pytest.mark.parametrize("residual", [False, True])
def test_no_change_keeps_the_conditioning_frame_only_for_a_residual_model(residual):
    from moviedreamer.video.conditioning import encode_latents, to_pixels

    sampler = tiny_sampler(descriptor=False)
    sampler.model.settings.residual = residual
    predicts_no_change(sampler.model)
    lat = torch.cat(list(sampler.latents(image(5), 9, None, seed=1, steps=4, noise_aug=0.0, guidance_min=1.0, guidance_max=1.0)))
    key = encode_latents(sampler.vae, to_pixels(image(5)))[0]
    assert lat.shape[0] == 9
    gap = (lat[1:] - key).abs().mean() / key.abs().mean()
    if residual:  # every later frame, in every segment, is the keyframe's latent
        assert gap < 1e-4, float(gap)
        # and the conditioning frame's noise augmentation stays out of them (it would build up segment after segment)
        noisy = torch.cat(list(sampler.latents(image(5), 9, None, seed=1, steps=4, noise_aug=0.2, guidance_min=1.0, guidance_max=1.0)))
        assert (noisy[1:] - key).abs().mean() / key.abs().mean() < 1e-4
    else:  # the plain model's "nothing" is zero latents
        assert lat[1:].abs().max() < 1e-4 and gap > 0.9


def test_training_targets_are_differences_from_the_conditioning_frame(tmp_path_factory):
    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import ShardIndex
    from moviedreamer.train.stages.i2v import I2VStage

    root, data = make_workdir(tmp_path_factory.mktemp("i2v-residual"))
    batches = {}
    for residual in (False, True):
        raw = stage_config(root, data, f"r{residual}", residual=residual)
        stage = I2VStage(StageConfig.model_validate(raw))
        model = stage.build_model()
        assert model.settings.residual is residual and stage.residual is residual
        samples = stage.samples(ShardIndex(data).load(1, stage.keys), np.random.default_rng(0)) * 2
        torch.manual_seed(3)
        batches[residual] = stage.collate(samples, torch.device("cpu"), torch.float32)
        assert np.isfinite(stage.loss(model, batches[residual])[0].item())
    plain, res = batches[False]["clean"], batches[True]["clean"]
    torch.testing.assert_close(res + plain[:, :1], plain, atol=1e-5, rtol=1e-5)  # differences from the clean first frame
    assert torch.all(res[:, 0] == 0) and plain[:, 0].abs().mean() > 0.1
