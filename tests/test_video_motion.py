"""Joint appearance-motion denoising (VideoJAM, video/motion.py): flow targets on the latent grid, growing an
appearance-only UNet without changing it, training with the flow loss, and sampling a joint model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from video_standins import image, tiny_sampler
from test_video_train import make_workdir, stage_config, train_in_process, write

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("i2v-flow"))


def test_flow_targets_are_pooled_to_the_latent_grid_in_latent_cells_and_mirrored_with_the_frames():
    from moviedreamer.errors import UserError
    from moviedreamer.video.motion import flow_latents

    flow = torch.zeros(2, 3, 32, 32, 2)  # [B, L-1, H, W, (x, y)] for windows of 4 frames
    flow[:, :, :, :16, 0] = 8.0  # the left half moves 8 px right per frame
    flow[:, 1, :, :, 1] = -4.0  # frame 1 -> 2: everything moves 4 px up
    f = flow_latents(flow, 4, (8, 8), scale=2.0, flip=torch.tensor([False, True]))
    assert f.shape == (2, 4, 2, 8, 8)
    # 32 px -> 8 cells: 8 px = 2 cells, times scale 2 = 4
    assert torch.all(f[0, :, 0, :, :4] == 4.0) and torch.all(f[0, :, 0, :, 4:] == 0.0)
    assert torch.all(f[0, 1, 1] == -2.0) and torch.all(f[0, 0, 1] == 0.0)
    torch.testing.assert_close(f[0, 3], f[0, 2])  # the last frame repeats the flow before it
    # mirrored: the right half moves left
    assert torch.all(f[1, :, 0, :, 4:] == -4.0) and torch.all(f[1, :, 0, :, :4] == 0.0)
    torch.testing.assert_close(f[1, :, 1], f[0, :, 1].flip(-1))
    with pytest.raises(UserError, match="2 flow fields for a window of 4 frames"):
        flow_latents(flow[:, :2], 4, (8, 8), 1.0)


def test_adding_flow_channels_keeps_what_the_model_draws():
    from moviedreamer.errors import UserError

    sampler = tiny_sampler()
    model = sampler.model
    c = model.latent_channels
    torch.manual_seed(0)
    noisy, cond = torch.randn(1, 3, c, 8, 8), torch.randn(1, 3, c, 8, 8)
    tokens, ids = torch.randn(1, 2, model.unet.config.cross_attention_dim), torch.tensor([[7.0, 20.0, 0.05]])
    before = model.unet_forward(noisy, cond, torch.tensor(0.3), tokens, ids)
    model.add_flow_channels(2)
    assert model.latent_channels == c and model.settings.flow_channels == 2
    assert model.unet.config.in_channels == 2 * c + 2 and model.unet.config.out_channels == c + 2
    after = model.unet_forward(torch.cat([noisy, torch.randn(1, 3, 2, 8, 8)], 2), cond, torch.tensor(0.3), tokens, ids)
    torch.testing.assert_close(after[:, :, :c], before)  # whatever the flow input, the appearance is unchanged
    assert after[:, :, c:].abs().mean() > 0.01 * after[:, :, :c].abs().mean()  # random flow rows: the flow loss reaches the network
    with pytest.raises(UserError, match="only add flow channels to an appearance-only UNet"):
        from moviedreamer.video.motion import grow_flow_channels

        grow_flow_channels(model.unet, c, 3)

    # the sampler denoises the flow with the clip and returns the appearance latents only; the same seed, the same clip
    frames = list(sampler.frames(image(1), 5, "runs. wide shot", seed=3))
    again = list(sampler.frames(image(1), 5, "runs. wide shot", seed=3))
    assert len(frames) == 5 and frames[0].shape == (16, 16, 3)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))


def test_training_with_flow_channels_learns_the_flow_and_exports_a_joint_model(workdir):
    from moviedreamer.errors import UserError
    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import ShardIndex
    from moviedreamer.train.stages.i2v import I2VStage
    from moviedreamer.video.model import AnchoredI2V

    root, data = workdir
    raw = stage_config(root, data, "flow", flow_channels=2)
    stage = I2VStage(StageConfig.model_validate(raw))
    model = stage.build_model()
    assert model.unet.config.in_channels == 10 and model.unet.config.out_channels == 6 and stage.flow_scale == 1.0
    samples = stage.samples(ShardIndex(data).load(1, stage.keys), np.random.default_rng(0)) * 2
    batch = stage.collate(samples, torch.device("cpu"), torch.float32)
    assert batch["clean"].shape[2] == 6 and batch["cond"].shape[2] == 4  # the flow rides with the noisy latents only
    assert torch.all(batch["clean"][:, :, 4:] == 0)  # the synthetic shards do not move
    assert "mse_flow" in stage.loss(model, batch)[1]

    summary = train_in_process(write(root, "flow", raw))
    assert summary["step"] == 3
    log = [json.loads(line) for line in (root / "flow" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(x["mse_flow"]) for x in log if "loss" in x)
    exported = AnchoredI2V.from_pretrained(root / "flow" / "export")
    assert exported.settings.flow_channels == 2 and exported.latent_channels == 4

    # continuing a joint model keeps its channels; asking to take them away is refused
    again = stage_config(root, data, "again", init_from=str(root / "flow" / "export"), unet={})
    assert I2VStage(StageConfig.model_validate(again)).build_model().settings.flow_channels == 2
    with pytest.raises(UserError, match="a model with 2 flow channels"):
        I2VStage(StageConfig.model_validate({**again, "model": {**again["model"], "flow_channels": 0}})).build_model()


def test_the_flow_loss_is_weighted_into_the_total(workdir):
    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import ShardIndex
    from moviedreamer.train.stages.i2v import I2VStage

    root, data = workdir
    losses = {}
    for weight in (0.0, 3.0):
        raw = stage_config(root, data, "w", flow_channels=2)
        raw["options"] = {**raw["options"], "flow_weight": weight}
        stage = I2VStage(StageConfig.model_validate(raw))
        torch.manual_seed(0)
        model = stage.build_model()
        samples = stage.samples(ShardIndex(data).load(1, stage.keys), np.random.default_rng(0)) * 2
        torch.manual_seed(1)
        batch = stage.collate(samples, torch.device("cpu"), torch.float32)
        loss, logs = stage.loss(model, batch)
        losses[weight] = (loss.item(), logs["mse_flow"])
    appearance = losses[0.0][0]
    assert losses[3.0][0] == pytest.approx(appearance + 3.0 * losses[3.0][1], rel=1e-5) and losses[3.0][1] > 0
