"""The I2V component: its folder layout round trip, loading from an SVD-XT diffusers folder (where, anchored on
the keyframe and without extras, the sampler gives diffusers' own StableVideoDiffusionPipeline's latents), loading
through a checkpoints profile, and clear errors for bad paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from video_standins import FakeVision, image, make_svd_folder, tiny_model, tiny_vae

TOY_FACES = Path(__file__).resolve().parents[1] / "moviedreamer" / "weights" / "toy" / "faces"

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def svd(tmp_path_factory):
    return make_svd_folder(tmp_path_factory.mktemp("svd") / "stable-video-diffusion-img2vid-xt", image_size=32)


def test_save_and_load_give_the_same_model_in_a_diffusers_folder(tmp_path):
    from diffusers import UNetSpatioTemporalConditionModel

    from moviedreamer.registry import FORMATS
    from moviedreamer.video.model import AnchoredI2V, time_ids

    model = tiny_model(descriptor_dim=16)
    model.settings.motion_bucket = 77.0
    folder = model.save_pretrained(tmp_path / "i2v")
    assert FORMATS["diffusers"].check(folder)  # the registry's check for the `i2v` component
    assert UNetSpatioTemporalConditionModel.from_pretrained(str(folder)).config.num_frames == 4  # a plain diffusers UNet folder
    loaded = AnchoredI2V.from_pretrained(folder)
    assert loaded.settings == model.settings and loaded.conditioning.config.descriptor_dim == 16
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 4, 4, 8, 8, generator=g), torch.tensor([0.5, 3.0]), torch.randn(2, 4, 4, 8, 8, generator=g),
            torch.randn(2, 24, generator=g), torch.randn(2, 16, generator=g), time_ids(8, 30.0, 0.05, 2))
    with torch.no_grad():
        assert torch.allclose(model(*args), loaded(*args), atol=1e-6)
        # the null condition zeroes the tokens; an all-zero descriptor row is "no descriptor"
        t = model.tokens(args[3], torch.cat([args[4][:1], torch.zeros(1, 16)]), torch.tensor([False, True]))
        assert t.shape == (2, 2, 32) and t[1].abs().sum() == 0
        assert model.tokens(args[3][:1], torch.zeros(1, 16))[0, 1].abs().sum() == 0
    assert loaded.make_scheduler().config.prediction_type == "v_prediction"


def test_a_sharded_export_loads_the_same_and_replaces_a_single_file(tmp_path):
    """`max_shard_size` (the toy export's `export_shard_size`) writes diffusers' index + shards, no file over the size."""
    from moviedreamer.registry import FORMATS
    from moviedreamer.video.model import AnchoredI2V

    model = tiny_model()
    folder = model.save_pretrained(tmp_path / "i2v")
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    model.save_pretrained(folder, max_shard_size="40KB")  # over the single-file export: no stale copy left
    shards = sorted(folder.glob("diffusion_pytorch_model-*.safetensors"))
    assert len(shards) >= 2 and not (folder / "diffusion_pytorch_model.safetensors").exists()
    assert (folder / "diffusion_pytorch_model.safetensors.index.json").is_file() and FORMATS["diffusers"].check(folder)
    biggest_tensor = max(p.numel() * p.element_size() for p in model.unet.parameters())
    assert all(s.stat().st_size <= max(40_000, biggest_tensor) + 20_000 for s in shards)
    loaded = AnchoredI2V.from_pretrained(folder)
    assert all(torch.equal(a, b) for a, b in zip(model.unet.state_dict().values(), loaded.unet.state_dict().values()))
    model.save_pretrained(folder)  # and back: diffusers alone would leave the index behind, pointing at deleted shards
    assert sorted(p.name for p in folder.glob("diffusion_pytorch_model*")) == ["diffusion_pytorch_model.safetensors"]
    assert AnchoredI2V.from_pretrained(folder).settings == model.settings


def test_an_svd_folder_loads_and_samples_like_diffusers_own_pipeline(svd):
    from diffusers import StableVideoDiffusionPipeline

    from moviedreamer.encoders.clip_vision import load_hf_clip_vision
    from moviedreamer.vae import load_vae
    from moviedreamer.video.model import AnchoredI2V
    from moviedreamer.video.sampler import AnchoredSampler, _gen, sub_seed

    model = AnchoredI2V.from_svd(svd, descriptor_dim=12, descriptor_mode="add")
    vae, vision = load_vae(svd / "vae"), load_hf_clip_vision(svd / "image_encoder")
    assert type(vae).__name__ == "AutoencoderKLTemporalDecoder" and model.settings.vae_scaling_factor == pytest.approx(0.18215)
    emb = torch.randn(1, 32)
    assert torch.equal(model.tokens(emb), emb[:, None])  # SVD attends to the CLIP image embedding itself
    assert torch.equal(model.tokens(emb, torch.randn(1, 12)), emb[:, None])  # the descriptor starts at zero

    sampler = AnchoredSampler(model, vae, vision)
    key = image(9, size=32)
    opts = dict(steps=3, noise_aug=0.0, pin_keyframe=False, guidance_min=1.0, guidance_max=1.0)
    ours = torch.cat(list(sampler.latents(key, 5, None, seed=3, **opts)))
    pipe = StableVideoDiffusionPipeline.from_pretrained(str(svd))
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn((1, 5, 4, 16, 16), generator=torch.Generator().manual_seed(sub_seed(sub_seed(3, 10, 0), 0)))
    assert torch.equal(noise, torch.randn((1, 5, 4, 16, 16), generator=_gen(sub_seed(3, 10, 0), 0)))
    px = torch.from_numpy(key).permute(2, 0, 1)[None].float() / 255
    theirs = pipe(px, height=32, width=32, num_frames=5, num_inference_steps=3, min_guidance_scale=1.0, max_guidance_scale=1.0,
                  fps=model.settings.fps, motion_bucket_id=model.settings.motion_bucket, noise_aug_strength=0.0, latents=noise,
                  output_type="latent").frames[0]
    # same maths; float differences only (attention kernels pick different paths for different batch layouts)
    assert torch.allclose(ours, theirs, atol=2e-3), (ours - theirs).abs().max()
    assert (ours - theirs).abs().max() < 1e-2 * ours.abs().max()
    # a longer shot through the temporal decoder, decoded in chunks
    frames = list(sampler.frames(key, 7, None, seed=1, steps=2, decode_chunk=3))
    assert len(frames) == 7 and frames[0].shape == (32, 32, 3)


def test_a_profile_gives_a_clip_renderer_and_names_what_is_missing(tmp_path, svd, caplog):
    from moviedreamer.errors import MissingComponentError
    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.pipeline.loading import clip_renderer

    model = tiny_model(descriptor_dim=0, vision_dim=32)
    vae = tiny_vae()
    model.settings.vae_scaling_factor = float(vae.config.scaling_factor)
    model.save_pretrained(tmp_path / "models" / "i2v")
    vae.save_pretrained(str(tmp_path / "models" / "vae"))
    shutil.copytree(svd / "image_encoder", tmp_path / "models" / "clip")
    profile = {"root": "models", "components": {
        "i2v": {"path": "i2v", "format": "diffusers", "made_by": "moviedreamer train i2v"},
        "vae": {"path": "vae", "format": "diffusers", "made_by": "moviedreamer train vae"},
        "vision_encoder": {"path": "clip", "format": "hf-clip-vision", "made_by": "moviedreamer train clip"}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(profile))
    renderer = clip_renderer(Profile.load(str(tmp_path / "p.yaml")))
    frames = list(renderer.render(image(1), 5, None, 3, 8))
    assert len(frames) == 5 and frames[0].shape == (16, 16, 3)
    fp = renderer.fingerprint
    assert fp == clip_renderer(Profile.load(str(tmp_path / "p.yaml"))).fingerprint
    assert fp != clip_renderer(Profile.load(str(tmp_path / "p.yaml")), steps=2).fingerprint
    assert renderer.sampler.scorer is None  # one candidate per segment: no face pack needed
    with caplog.at_level("WARNING"):
        assert clip_renderer(Profile.load(str(tmp_path / "p.yaml")), candidates=2).sampler.scorer is None
    assert "no face_analysis" in caplog.text
    profile["components"]["face_analysis"] = {"path": str(TOY_FACES), "format": "insightface-pack", "made_by": "moviedreamer train faces"}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(profile))
    ranked = clip_renderer(Profile.load(str(tmp_path / "p.yaml")), candidates=2)
    assert ranked.sampler.scorer is not None and ranked.fingerprint != clip_renderer(Profile.load(str(tmp_path / "p.yaml")), candidates=2, accept=0.5).fingerprint
    assert len(list(ranked.render(image(1), 3, None, 3, 8))) == 3

    shutil.rmtree(tmp_path / "models" / "i2v")
    with pytest.raises(MissingComponentError, match=r"component 'i2v'.*profiles\.p\.components\.i2v.*moviedreamer train i2v"):
        clip_renderer(Profile.load(str(tmp_path / "p.yaml")))


def test_bad_paths_and_mismatches_are_clear_errors(tmp_path, svd):
    from moviedreamer.errors import CheckpointError, UserError
    from moviedreamer.vae import load_vae
    from moviedreamer.video.model import AnchoredI2V, I2VSettings
    from moviedreamer.video.sampler import AnchoredSampler

    with pytest.raises(CheckpointError, match=r"nowhere: expected an i2v folder .* found no such folder"):
        AnchoredI2V.from_pretrained(tmp_path / "nowhere")
    folder = tiny_model().save_pretrained(tmp_path / "i2v")
    shutil.rmtree(folder / "conditioning")
    with pytest.raises(CheckpointError, match=r"conditioning/config.json: expected this file of an i2v folder"):
        AnchoredI2V.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        AnchoredI2V.from_pretrained(folder)

    broken = tmp_path / "svd"
    shutil.copytree(svd, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(CheckpointError, match=r"unet/config.json: expected the UNetSpatioTemporalConditionModel of an SVD diffusers folder"):
        AnchoredI2V.from_svd(broken)
    with pytest.raises(CheckpointError, match="expected a Stable Video Diffusion"):
        AnchoredI2V.from_svd(tmp_path / "missing-svd")
    with pytest.raises(CheckpointError, match="expected a diffusers VAE folder"):
        load_vae(tmp_path / "no-vae")
    from moviedreamer.tokenizer.autoencoder import load_vae as load_image_vae

    with pytest.raises(CheckpointError, match=r"expected a diffusers AutoencoderKL \(an image VAE\), found AutoencoderKLTemporalDecoder"):
        load_image_vae(svd / "vae")  # the keyframe tokenizer encodes single images

    with pytest.raises(UserError, match="overlap must be in"):
        I2VSettings(num_frames=4, overlap=4).check()
    model = tiny_model()
    model.settings.vae_scaling_factor = 0.5
    with pytest.raises(UserError, match="scaling_factor is 0.9, the video model was trained with 0.5"):
        AnchoredSampler(model, tiny_vae(scaling_factor=0.9), FakeVision())
    from diffusers import AutoencoderKL

    vae8 = AutoencoderKL(block_out_channels=(8,), down_block_types=["DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D"],
                         latent_channels=8, norm_num_groups=4)
    with pytest.raises(UserError, match="8 latent channels, the video model 4"):
        AnchoredSampler(tiny_model(), vae8, FakeVision())
    with pytest.raises(UserError, match="gives 32-wide image embeddings, the video model was trained on 24"):
        AnchoredSampler(tiny_model(), tiny_vae(), FakeVision(dim=32))
    json.dumps(I2VSettings().__dict__)  # settings stay JSON
    assert np.isfinite(I2VSettings().motion_bucket)
