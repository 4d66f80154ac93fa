"""`moviedreamer train i2v`: a few steps through the DeepSpeed harness on tiny synthetic shards whose export samples
clips; the stage started from an SVD-XT folder (paper profile) on a tiny stand-in; clear config errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from video_standins import TINY_UNET, make_svd_folder, tiny_vae

torch.set_num_threads(1)

FRESH_UNET = {k: v for k, v in TINY_UNET.items() if k not in ("sample_size", "in_channels", "out_channels", "num_frames", "projection_class_embeddings_input_dim")}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("i2v"))


def make_workdir(root: Path) -> tuple[Path, Path]:
    """Tiny synthetic shards, VAE, vision and text encoders and a DeepSpeed JSON under `root`: (root, shards)."""
    from encoder_standins import make_hf_clip_text, make_hf_clip_vision

    from moviedreamer.train.synthetic import write_synthetic_shards

    data = write_synthetic_shards(root / "data", episodes=4, shots=2, frames=4, size=32)
    tiny_vae().save_pretrained(str(root / "vae"))
    make_hf_clip_vision(root / "vision")
    make_hf_clip_text(root / "text")
    ds = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}, "zero_optimization": {"stage": 0}}
    (root / "ds.json").write_text(json.dumps(ds))
    return root, data


def stage_config(root: Path, data: Path, name: str, **model) -> dict:
    m = {"vae": str(root / "vae"), "vision_encoder": str(root / "vision"), "descriptor_encoder": str(root / "text"),
         "unet": FRESH_UNET, "settings": {"overlap": 1, "steps": 2, "tau": 1}, **model}
    return {"stage": "i2v", "data": str(data), "out": str(root / name), "deepspeed": str(root / "ds.json"), "steps": 3, "save_every": 3,
            "log_every": 1, "seed": 1, "threads": 1, "model": m,
            "options": {"resolution": 16, "frames": 4, "min_frames": 3, "export_samples": 4}}


def write(root: Path, name: str, cfg: dict) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_in_process(cfg_path: Path) -> dict:
    """The harness in this process (a subprocess would import torch, diffusers and DeepSpeed again: ~15 s): it makes
    a world of one through environment variables and a gloo process group, both undone afterwards."""
    import torch.distributed as td

    from moviedreamer.train.config import load_config
    from moviedreamer.train.harness import train

    saved = dict(os.environ)
    os.environ["MOVIEDREAMER_NO_BAR"] = "1"
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MOVIEDREAMER_TRAIN_KILL_AT_STEP"):
        os.environ.pop(k, None)
    try:
        return train(load_config(cfg_path))
    finally:
        if td.is_available() and td.is_initialized():
            td.destroy_process_group()
        import deepspeed.utils.groups as ds_groups

        ds_groups._WORLD_GROUP = None  # DeepSpeed caches its clone of the destroyed world group: the next run makes its own
        os.environ.clear()
        os.environ.update(saved)
        torch.set_num_threads(1)


def test_train_i2v_runs_through_the_harness_and_exports_a_model_that_samples(workdir):
    root, data = workdir
    cfg = write(root, "run", stage_config(root, data, "run"))
    summary = train_in_process(cfg)
    assert summary["step"] == 3 and summary["steps_run"] == 3
    log = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
    steps = [x for x in log if "loss" in x]
    assert [x["step"] for x in steps] == [1, 2, 3] and all(np.isfinite(x["loss"]) for x in steps)
    assert {x["frames"] for x in steps} <= {3.0, 4.0}  # micro batches cut to [min_frames, frames]
    done = log[-1]
    assert done["event"] == "done" and done["latent_channels"] == 4 and np.isfinite(done["heldout_loss"])

    from moviedreamer.encoders.clip_vision import load_vision_encoder
    from moviedreamer.encoders.longclip import load_descriptor_encoder
    from moviedreamer.vae import load_vae
    from moviedreamer.video.model import AnchoredI2V
    from moviedreamer.video.sampler import AnchoredSampler

    model = AnchoredI2V.from_pretrained(root / "run" / "export")
    assert model.settings.fps == 8 and model.settings.vae_scaling_factor == pytest.approx(0.9) and model.conditioning.num_tokens == 2
    sampler = AnchoredSampler(model, load_vae(root / "vae"), load_vision_encoder(root / "vision"), load_descriptor_encoder(root / "text"))
    key = np.zeros((16, 16, 3), np.uint8)
    key[4:10, 4:10] = 200
    frames = list(sampler.frames(key, 6, "stands. wide shot", seed=0))
    assert len(frames) == 6 and frames[0].shape == (16, 16, 3)


def test_the_stage_starts_from_an_svd_folder_and_exports_its_vae(workdir, tmp_path):
    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import EpisodeStream, ShardIndex
    from moviedreamer.train.stages.i2v import I2VStage
    from moviedreamer.vae import load_vae
    from moviedreamer.video.model import AnchoredI2V

    root, data = workdir
    svd = make_svd_folder(tmp_path / "stable-video-diffusion-img2vid-xt", image_size=32)
    raw = {"stage": "i2v", "data": str(data), "out": str(tmp_path / "out"), "deepspeed": str(root / "ds.json"), "steps": 1,
           "model": {"init_from": str(svd), "descriptor_encoder": str(root / "text"), "export_vae": True, "export_image_encoder": True,
                     "settings": {"steps": 4, "tau": 2}},
           "options": {"resolution": 32, "frames": 4, "export_samples": 2, "export_dtype": "bfloat16"}}
    stage = I2VStage(StageConfig.model_validate(raw))
    model = stage.build_model()
    assert model.conditioning.config.descriptor_mode == "token" and model.settings.steps == 4 and model.settings.num_frames == 5
    index = ShardIndex(data)
    samples = stage.samples(index.load(0, stage.keys), np.random.default_rng(0))
    assert len(samples) == 2 and samples[0]["frames"].shape[0] == 4 and samples[0]["text"] == "stands. wide shot"
    torch.manual_seed(0)
    batch = stage.collate(samples, torch.device("cpu"), torch.float32)
    assert batch["noisy"].shape == (2, 4, 4, 16, 16) and batch["ids"].shape == (2, 3) and batch["image_embeds"].shape == (2, 32)
    loss, metrics = stage.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.unet.parameters())
    out = tmp_path / "export"
    figures = stage.export(model, out, EpisodeStream(index, stage.samples, stage.keys, 0, 1, 5, 2))
    assert figures["vae_scaling_factor"] == pytest.approx(0.18215)
    assert type(load_vae(out / "vae")).__name__ == "AutoencoderKLTemporalDecoder"
    again = AnchoredI2V.from_pretrained(out)  # bf16 files (configs/paper/i2v.yaml), float32 once loaded unless asked
    assert again.settings.vae_scaling_factor == pytest.approx(0.18215) and again.dtype == torch.float32
    assert AnchoredI2V.from_pretrained(out, torch.bfloat16).dtype == torch.bfloat16
    # the anchor's encoder it was trained with (SVD's image_encoder/) goes with it, and its settings name it
    assert (out / "image_encoder" / "model.safetensors").read_bytes() == (svd / "image_encoder" / "model.safetensors").read_bytes()
    assert again.settings.image_encoder == {"path": "image_encoder", "format": "hf-clip-vision"}
    # and the descriptor token's text encoder, named relative to the export (it is not bundled: another folder than SVD's)
    assert (out / again.settings.descriptor_encoder["path"]).resolve() == (root / "text").resolve()


def test_the_end_frame_is_drawn_from_the_last_three_frames_noised_and_dropped_a_quarter_of_the_time(workdir):
    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import ShardIndex
    from moviedreamer.train.stages.i2v import I2VStage

    root, data = workdir
    raw = stage_config(root, data, "unused")
    raw["model"].pop("descriptor_encoder")
    raw["options"] = {"resolution": 16, "frames": 4, "noise_aug_mean": -30.0, "uncond_prob": 0.0}  # ~no augmentation noise
    stage = I2VStage(StageConfig.model_validate(raw))
    samples = stage.samples(ShardIndex(data).load(1, stage.keys), np.random.default_rng(0)) * 200
    torch.manual_seed(0)
    batch = stage.collate(samples, torch.device("cpu"), torch.float32)
    sf = float(stage.vae.config.scaling_factor)
    z = batch["clean"] / sf  # unscaled, as in the concatenated latents
    last, keep = batch["cond"][:, -1], batch["end_keep"]
    assert 0.18 < 1 - keep.float().mean().item() < 0.32  # dropped with p = 0.25
    assert torch.allclose(last[~keep], batch["cond"][~keep, 0])  # dropped: the position holds the conditioning frame
    dist = torch.stack([(last - z[:, t]).flatten(1).abs().amax(1) for t in range(4)], dim=1)  # [B, 4]
    assert torch.all(dist[keep][:, 1:].amin(1) < 1e-3)  # kept: one of the window's last 3 frames (noised, barely here)
    moving = (z[:, 1] - z[:, 3]).flatten(1).abs().amax(1) > 1e-2
    picked = dist[keep & moving][:, 1:].argmin(1)
    assert set(picked.tolist()) == {0, 1, 2}  # all three are drawn
    assert torch.all(batch["cond"][:, :-1] == batch["cond"][:, :1])  # every other position: the window's first frame
    stage.opts.noise_aug_mean = -3.0
    noised = stage.collate(samples[:8], torch.device("cpu"), torch.float32)
    k = noised["end_keep"]
    d = torch.stack([(noised["cond"][:, -1] - noised["clean"][:, t] / sf).flatten(1).abs().amax(1) for t in range(4)], dim=1)
    assert torch.all(d[k].amin(1) > 1e-3)  # with augmentation the end frame is noised


def test_config_errors_are_clear(workdir, run_cli):
    root, data = workdir
    bad = stage_config(root, data, "bad", vae=str(root / "no-vae"))
    code, _, err = run_cli("train", "i2v", "--config", write(root, "bad1", bad))
    assert code == 2 and "model.vae: expected a diffusers VAE folder" in err and "no-vae" in err
    bad = stage_config(root, data, "bad")
    bad["model"].pop("vision_encoder")
    code, _, err = run_cli("train", "i2v", "--config", write(root, "bad2", bad))
    assert code == 2 and "a fresh model needs model.vae and model.vision_encoder" in err
    bad = stage_config(root, data, "bad", settings={"stepz": 3})
    code, _, err = run_cli("train", "i2v", "--config", write(root, "bad3", bad))
    assert code == 2 and "unknown model.settings keys ['stepz']" in err
    bad = stage_config(root, data, "bad", unet={**FRESH_UNET, "block_channels": [32]})
    code, _, err = run_cli("train", "i2v", "--config", write(root, "bad5", bad))
    assert code == 2 and "model.unet: unknown UNetSpatioTemporalConditionModel arguments ['block_channels']" in err
    (root / "svd-empty").mkdir(exist_ok=True)
    (root / "svd-empty" / "model_index.json").write_text("{}")
    bad = stage_config(root, data, "bad", init_from=str(root / "svd-empty"), unet={})
    for k in ("vae", "vision_encoder"):
        bad["model"].pop(k)
    code, _, err = run_cli("train", "i2v", "--config", write(root, "bad4", bad))
    assert code == 2 and "unet/config.json: expected the UNetSpatioTemporalConditionModel of an SVD diffusers folder" in err


def test_float16_export_is_half_the_size_and_loads_as_float32(workdir, tmp_path):
    from safetensors import safe_open

    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import EpisodeStream, ShardIndex
    from moviedreamer.train.stages.i2v import I2VStage
    from moviedreamer.video.model import AnchoredI2V

    root, data = workdir
    sizes, models = {}, {}
    for dtype in ("float32", "float16"):
        raw = stage_config(root, data, "fp16")
        raw["options"] |= {"export_samples": 2, "export_dtype": dtype}
        stage = I2VStage(StageConfig.model_validate(raw))
        torch.manual_seed(0)
        model = stage.build_model()
        out = tmp_path / dtype
        stage.export(model, out, EpisodeStream(ShardIndex(data), stage.samples, stage.keys, 0, 1, 5, 2))
        sizes[dtype] = (out / "diffusion_pytorch_model.safetensors").stat().st_size
        with safe_open(str(out / "diffusion_pytorch_model.safetensors"), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {getattr(torch, dtype)}
        models[dtype] = AnchoredI2V.from_pretrained(out)
        assert {p.dtype for p in models[dtype].parameters()} == {torch.float32}
    assert sizes["float16"] < 0.55 * sizes["float32"]
    for (name, a), b in zip(models["float32"].state_dict().items(), models["float16"].state_dict().values()):
        torch.testing.assert_close(a.half().float(), b, msg=name)


def test_the_stage_continues_an_i2v_folder_with_its_weights(workdir, tmp_path):
    from moviedreamer.errors import UserError
    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.stages.i2v import I2VStage

    root, data = workdir
    torch.manual_seed(0)
    trained = I2VStage(StageConfig.model_validate(stage_config(root, data, "first"))).build_model()
    folder = trained.save_pretrained(tmp_path / "i2v")
    raw = stage_config(root, data, "again", init_from=str(folder), unet={}, settings={"steps": 3})
    model = I2VStage(StageConfig.model_validate(raw)).build_model()
    assert model.training and model.settings.steps == 3 and model.settings.overlap == trained.settings.overlap
    for (name, a), b in zip(trained.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    assert all(p.requires_grad for p in model.parameters())

    no_vision = {**raw, "model": {k: v for k, v in raw["model"].items() if k != "vision_encoder"}}
    with pytest.raises(UserError, match="is an i2v folder: also give model.vision_encoder and model.vae"):
        I2VStage(StageConfig.model_validate(no_vision))
    other_mode = {**raw, "model": {**raw["model"], "descriptor_mode": "add"}}
    with pytest.raises(UserError, match="descriptor_mode 'token'; this run has .*'add'"):
        I2VStage(StageConfig.model_validate(other_mode)).build_model()


def test_noise_share_correlates_the_frames_noise_and_the_export_samples_with_it(workdir, tmp_path):
    from moviedreamer.errors import UserError
    from moviedreamer.train.config import StageConfig
    from moviedreamer.train.data import EpisodeStream, ShardIndex
    from moviedreamer.train.stages.i2v import I2VStage
    from moviedreamer.video.model import AnchoredI2V

    root, data = workdir
    for share in (0.0, 0.8):
        raw = stage_config(root, data, "share")
        raw["options"] = {"resolution": 16, "frames": 4, "noise_share": share, "export_samples": 2}
        stage = I2VStage(StageConfig.model_validate(raw))
        samples = stage.samples(ShardIndex(data).load(1, stage.keys), np.random.default_rng(0)) * 32
        torch.manual_seed(0)
        batch = stage.collate(samples, torch.device("cpu"), torch.float32)
        noise = batch["noise"]  # [B, L, C, h, w]
        torch.testing.assert_close(batch["noisy"], batch["clean"] + batch["sigma"].view(-1, 1, 1, 1, 1) * noise)
        assert abs(noise.var().item() - 1) < 0.05  # each frame's noise stays unit variance
        a, b = noise[:, 0].flatten(), noise[:, 2].flatten()
        corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
        assert abs(corr - share) < 0.05, (share, corr)
        if share:
            model = stage.build_model()
            stage.export(model, tmp_path / "export", EpisodeStream(ShardIndex(data), stage.samples, stage.keys, 0, 1, 5, 2))
            assert AnchoredI2V.from_pretrained(tmp_path / "export").settings.noise_share == share
    raw["options"]["noise_share"] = 1.0
    with pytest.raises(UserError, match="noise_share"):
        I2VStage(StageConfig.model_validate(raw))
