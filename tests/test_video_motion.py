"""Joint appearance-motion denoising (VideoJAM, video/motion.py): the flow picture, growing an appearance-only UNet
(flow and anchor channels) without changing it, training with the flow loss, Inner-Guidance, sampling a joint model."""

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


def test_the_flow_picture_is_the_colour_wheel_and_mirrors_with_the_frames():
    from moviedreamer.errors import UserError
    from moviedreamer.video.motion import flow_image, per_frame_flow

    flow = torch.zeros(2, 3, 32, 32, 2)  # [B, L-1, H, W, (x, y)] for windows of 4 frames
    flow[:, :, :, :16, 0] = 8.0  # the left half moves 8 px right per frame
    flow[:, 1, :, :, 1] = -4.0  # frame 1 -> 2: everything moves 4 px up as well
    f = per_frame_flow(flow, 4, flip=torch.tensor([False, True]))
    assert f.shape == (2, 4, 32, 32, 2)
    torch.testing.assert_close(f[0, 3], f[0, 2])  # the last frame repeats the flow before it
    assert torch.all(f[1, 0, :, 16:, 0] == -8.0) and torch.all(f[1, 0, :, :16, 0] == 0.0)  # mirrored: the right half moves left
    pic = flow_image(f[:, 0], flow_max=8.0 / 32)  # full saturation at 8 px per frame on a 32 px frame
    assert pic.shape == (2, 3, 32, 32)
    torch.testing.assert_close(pic[0, :, 5, 5], torch.tensor([1.0, -1.0, -1.0]))  # moving right: red
    torch.testing.assert_close(pic[0, :, 5, 20], torch.tensor([1.0, 1.0, 1.0]))  # still: white
    torch.testing.assert_close(pic[1, :, 5, 20], torch.tensor([-1.0, 1.0, 1.0]))  # moving left: cyan
    half = flow_image(f[:1, 0], flow_max=16.0 / 32)  # half as saturated
    torch.testing.assert_close(half[0, :, 5, 5], torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(UserError, match="2 flow fields for a window of 4 frames"):
        per_frame_flow(flow[:, :2], 4)


def test_adding_flow_channels_keeps_what_the_model_draws():
    from moviedreamer.errors import UserError

    sampler = tiny_sampler()
    model = sampler.model
    c = model.latent_channels
    torch.manual_seed(0)
    noisy, cond = torch.randn(1, 3, c, 8, 8), torch.randn(1, 3, c, 8, 8)
    tokens, ids = torch.randn(1, 2, model.unet.config.cross_attention_dim), torch.tensor([[7.0, 20.0, 0.05]])
    before = model.unet_forward(noisy, cond, torch.tensor(0.3), tokens, ids)
    model.add_flow_channels(c)
    assert model.latent_channels == c and model.settings.flow_channels == c
    assert model.unet.config.in_channels == 3 * c and model.unet.config.out_channels == 2 * c
    after = model.unet_forward(torch.cat([noisy, torch.randn(1, 3, c, 8, 8)], 2), cond, torch.tensor(0.3), tokens, ids)
    torch.testing.assert_close(after[:, :, :c], before)  # whatever the flow input, the appearance is unchanged
    assert after[:, :, c:].abs().mean() > 0.01 * after[:, :, :c].abs().mean()  # random flow rows: the flow loss reaches the network
    with pytest.raises(UserError, match="only add flow channels to an appearance-only UNet"):
        from moviedreamer.video.motion import grow_flow_channels

        grow_flow_channels(model.unet, c, 3)
    model.add_anchor_latent()  # and the keyframe's latents on every frame: still what it drew
    assert model.unet.config.in_channels == 4 * c and model.settings.anchor_latent
    anchored = model.unet_forward(torch.cat([noisy, torch.randn(1, 3, c, 8, 8)], 2), torch.cat([cond, torch.randn(1, 3, c, 8, 8)], 2),
                                  torch.tensor(0.3), tokens, ids)
    torch.testing.assert_close(anchored[:, :, :c], before)

    # the sampler denoises the flow with the clip and returns the appearance latents only; the same seed, the same clip
    frames = list(sampler.frames(image(1), 5, "runs. wide shot", seed=3))
    again = list(sampler.frames(image(1), 5, "runs. wide shot", seed=3))
    assert len(frames) == 5 and frames[0].shape == (16, 16, 3)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))


def test_inner_guidance_adds_a_row_without_the_motion_input_in_its_share_of_the_steps():
    sampler = tiny_sampler(guidance_min=2.0, guidance_max=2.0)
    c = sampler.model.latent_channels
    sampler.model.add_flow_channels(c)
    with torch.no_grad():  # grown flow inputs start at zero weight: let the model look at them, as a trained one does
        sampler.model.unet.conv_in.weight[:, c : 2 * c].normal_(0, 0.2, generator=torch.Generator().manual_seed(0))
    rows, seen = [], []
    unet = sampler.model.unet
    original = unet.forward

    def forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True):
        rows.append(sample.shape[0])
        seen.append(sample[:, :, c : 2 * c].abs().flatten(1).sum(1))
        return original(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=return_dict)

    unet.forward = forward
    try:
        plain = list(sampler.latents(image(2), 4, "runs. wide shot", seed=1, steps=4))
        assert rows == [2, 2, 2, 2]  # guidance rows only
        rows.clear(), seen.clear()
        guided = list(sampler.latents(image(2), 4, "runs. wide shot", seed=1, steps=4, inner_guidance=2.0, inner_guidance_share=0.5))
    finally:
        unet.forward = original
    assert rows == [3, 3, 2, 2]  # the extra row in the first half of the steps
    assert seen[0][2] == 0 and seen[0][1] > 0  # that row's noisy flow input is zeroed, the others keep it
    assert not torch.allclose(torch.cat(plain), torch.cat(guided))  # and it changes the clip


def test_training_with_flow_channels_learns_the_flow_and_exports_a_joint_model(workdir):
    from moviedreamer.errors import UserError
    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import ShardIndex
    from moviedreamer.train.stages.i2v import I2VStage
    from moviedreamer.video.model import AnchoredI2V

    root, data = workdir
    raw = stage_config(root, data, "flow", flow_channels=4, anchor_latent=True)
    stage = I2VStage(StageConfig.model_validate(raw))
    model = stage.build_model()
    assert model.unet.config.in_channels == 16 and model.unet.config.out_channels == 8 and stage.flow_max == model.settings.flow_max
    samples = stage.samples(ShardIndex(data).load(1, stage.keys), np.random.default_rng(0)) * 2
    batch = stage.collate(samples, torch.device("cpu"), torch.float32)
    assert batch["clean"].shape[2] == 8 and batch["cond"].shape[2] == 8  # flow with the noisy latents; conditioning + anchor latents
    still = batch["clean"][:, :, 4:]  # the synthetic shards do not move: every frame's flow picture is plain white
    torch.testing.assert_close(still, still[:1, :1].expand_as(still))
    assert "mse_flow" in stage.loss(model, batch)[1]
    dropped = I2VStage(StageConfig.model_validate({**raw, "options": {**raw["options"], "flow_input_drop": 1.0}}))
    dropped.build_model()
    batch = dropped.collate(samples, torch.device("cpu"), torch.float32)
    assert torch.all(batch["noisy"][:, :, 4:] == 0) and batch["noisy"][:, :, :4].abs().sum() > 0  # no motion input: Inner-Guidance's branch

    summary = train_in_process(write(root, "flow", raw))
    assert summary["step"] == 3
    log = [json.loads(line) for line in (root / "flow" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(x["mse_flow"]) for x in log if "loss" in x)
    exported = AnchoredI2V.from_pretrained(root / "flow" / "export")
    assert exported.settings.flow_channels == 4 and exported.latent_channels == 4 and exported.settings.anchor_latent

    # continuing a joint model keeps its channels; asking to take them away is refused
    again = stage_config(root, data, "again", init_from=str(root / "flow" / "export"), unet={})
    assert I2VStage(StageConfig.model_validate(again)).build_model().settings.flow_channels == 4
    with pytest.raises(UserError, match="a model with 4 flow channels"):
        I2VStage(StageConfig.model_validate({**again, "model": {**again["model"], "flow_channels": 0}})).build_model()


def test_the_flow_loss_is_weighted_into_the_total(workdir):
    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import ShardIndex
    from moviedreamer.train.stages.i2v import I2VStage

    root, data = workdir
    losses = {}
    for weight in (0.0, 3.0):
        raw = stage_config(root, data, "w", flow_channels=4)
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


def test_the_paper_model_grows_from_an_svd_folder_into_a_joint_anchored_one(workdir, tmp_path):
    from video_standins import make_svd_folder

    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import EpisodeStream, ShardIndex
    from moviedreamer.train.stages.i2v import I2VStage
    from moviedreamer.video.model import AnchoredI2V

    root, data = workdir
    svd = make_svd_folder(tmp_path / "svd-xt", image_size=32)
    raw = {"stage": "i2v", "data": str(data), "out": str(tmp_path / "out"), "deepspeed": str(root / "ds.json"), "steps": 1,
           "model": {"init_from": str(svd), "flow_channels": 4, "anchor_latent": True, "settings": {"steps": 2, "tau": 1, "inner_guidance": 1.0}},
           "options": {"resolution": 32, "frames": 4, "export_samples": 2}}
    stage = I2VStage(StageConfig.model_validate(raw))
    model = stage.build_model()
    stock = AnchoredI2V.from_svd(svd)
    assert model.unet.config.in_channels == 16 and model.unet.config.out_channels == 8 and model.settings.anchor_latent
    torch.manual_seed(0)
    x, cond = torch.randn(1, 4, 4, 16, 16), torch.randn(1, 4, 4, 16, 16)
    tokens, ids = torch.randn(1, 1, stock.unet.config.cross_attention_dim), torch.tensor([[6.0, 127.0, 0.02]])
    want = stock.unet_forward(x, cond, torch.tensor(0.5), tokens, ids)
    got = model.unet_forward(torch.cat([x, torch.randn_like(x)], 2), torch.cat([cond, torch.randn_like(cond)], 2), torch.tensor(0.5), tokens, ids)
    torch.testing.assert_close(got[:, :, :4], want)  # grown with zero weights: still SVD until trained
    samples = stage.samples(ShardIndex(data).load(0, stage.keys), np.random.default_rng(0))
    batch = stage.collate(samples, torch.device("cpu"), torch.float32)
    assert batch["noisy"].shape[2] == 8 and batch["cond"].shape[2] == 8
    loss, logs = stage.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and "mse_flow" in logs
    stage.export(model, tmp_path / "export", EpisodeStream(ShardIndex(data), stage.samples, stage.keys, 0, 1, 5, 2))
    again = AnchoredI2V.from_pretrained(tmp_path / "export")
    assert again.settings.flow_channels == 4 and again.settings.anchor_latent and again.settings.inner_guidance == 1.0
