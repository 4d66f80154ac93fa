"""`moviedreamer train tokenizer` on tiny synthetic shards and random stand-in encoders: samples and masking in
process, then a 3-step run through the DeepSpeed harness whose export loads and decodes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from moviedreamer.errors import UserError

REPO = Path(__file__).resolve().parent.parent
CONFIG = """\
stage: tokenizer
data: {root}/data
out: {root}/{name}
deepspeed: {root}/ds.json
steps: 3
log_every: 1
seed: 3
threads: 1
model:
  encoders: {root}/profile.yaml
  token_dim: 8
  pooled_dim: 16
  compressor: {{width: 32, layers: 1, heads: 2}}
  decoder: {{max_descriptors: 6, max_faces: 2, token_expand: 2, steps: 2, guidance: 1.5}}
  unet:
    block_out_channels: [16, 32]
    layers_per_block: 1
    down_block_types: [DownBlock2D, CrossAttnDownBlock2D]
    up_block_types: [CrossAttnUpBlock2D, UpBlock2D]
    attention_head_dim: [2, 4]
    cross_attention_dim: 32
    norm_num_groups: 8
    addition_time_embed_dim: 8
options:
  resolution: 32
  export_samples: 2
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    sys.path.insert(0, str(REPO / "tests"))
    from encoder_standins import make_insightface_pack

    from moviedreamer.tokenizer.standins import make_clip_folder, make_vae_folder
    from moviedreamer.train.synthetic import write_synthetic_shards

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("toktrain")
    make_clip_folder(root / "clip")
    make_vae_folder(root / "vae")
    make_insightface_pack(root / "faces", detector=False, embed_dim=16)
    write_synthetic_shards(root / "data", episodes=4, shots=2, frames=2, size=32)
    (root / "profile.yaml").write_text(f"root: {root}\ncomponents:\n"
                                       "  vision_encoder: {path: clip, format: open_clip-folder}\n"
                                       "  descriptor_encoder: {path: clip, format: open_clip-folder}\n"
                                       "  vae: {path: vae, format: diffusers}\n"
                                       "  face_analysis: {path: faces, format: insightface-pack}\n")
    ds = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}, "zero_optimization": {"stage": 0}}
    (root / "ds.json").write_text(json.dumps(ds))
    return root


def config_file(root: Path, name: str) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(CONFIG.format(root=root, name=name))
    return path


def stage_for(root: Path, *overrides):
    from moviedreamer.train.config import load_config
    from moviedreamer.train.stages import load_stage

    return load_stage("tokenizer")(load_config(config_file(root, "inproc"), list(overrides)))


def test_samples_carry_cached_features_descriptor_slots_and_faces(workdir):
    stage = stage_for(workdir, "options.hflip=false")
    ep = stage.index.load(0, stage.keys)
    calls = []
    encode = stage.vision.encode_image
    stage.vision.encode_image = lambda x: calls.append(len(x)) or encode(x)
    try:
        samples = stage.samples(ep, np.random.default_rng(0))
        again = stage.samples(ep, np.random.default_rng(0))
    finally:
        stage.vision.encode_image = encode
    assert calls == [2]  # both shots in one batch, then from the cache
    assert len(samples) == 2
    s = samples[0]
    assert s["latent"].shape == (4, 16, 16) and s["patches"].shape == (stage.vision.num_patches, stage.vision.width)
    # slots: setting, action, camera, style, one character description; each embedded and non-zero
    assert s["desc"].shape == (5, stage.descriptor.embed_dim) and (s["desc"].abs().sum(1) > 0).all()
    assert s["faces"].shape == (1, 16) and torch.allclose(s["faces"].norm(dim=1), torch.ones(1), atol=1e-4)
    assert all(torch.equal(a["desc"], b["desc"]) and torch.equal(a["latent"], b["latent"]) for a, b in zip(samples, again))


def test_collate_masks_at_the_configured_rates(workdir):
    samples = None
    for faces, uncond, expect_faces in ((1.0, 0.0, False), (0.0, 0.0, True), (0.0, 1.0, False)):
        stage = stage_for(workdir, f"options.mask.faces={faces}", f"options.mask.uncond={uncond}", "options.mask.tokens=0.0",
                          "options.mask.descriptors=0.0")
        if samples is None:
            samples = stage.samples(stage.index.load(0, stage.keys), np.random.default_rng(0)) * 3
        batch = stage.collate(samples, torch.device("cpu"), torch.float32)
        present = torch.zeros(6, 2, dtype=torch.bool)
        present[:, 0] = True  # one character (one face) per synthetic shot
        assert torch.equal(batch["face_on"], present & expect_faces)
        assert batch["desc_on"][:, :5].all() == (uncond == 0.0) and not batch["desc_on"][:, 5:].any()
        assert batch["keep_tokens"].all() == (uncond == 0.0)
        assert batch["noisy"].shape == (6, 4, 16, 16) and batch["ids"][0].tolist() == [32, 32, 0, 0, 32, 32]


def test_bad_stage_configs_are_clear_errors(workdir):
    with pytest.raises(UserError, match="model.init_unet: expected"):
        stage_for(workdir, "model.unet={}", f"model.init_unet={workdir / 'nowhere'}")
    with pytest.raises(UserError, match="unknown key"):
        stage_for(workdir, "model.tokens=3")
    with pytest.raises(UserError, match="derived"):
        stage_for(workdir, "model.compressor.token_dim=3")
    with pytest.raises(UserError, match="compressor config: width 30 must be divisible by heads 4"):
        stage_for(workdir, "model.compressor.width=30", "model.compressor.heads=4").build_model()


def test_swap_left_right_for_mirrored_keyframes():
    from moviedreamer.tokenizer.render import swap_left_right

    assert swap_left_right("Mia runs to the right, Tom looks left") == "Mia runs to the left, Tom looks right"
    assert swap_left_right("a bright room") == "a bright room"


def test_three_harness_steps_train_and_export_a_loadable_tokenizer(workdir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOVIEDREAMER_NO_BAR": "1"}
    for k in ("RANK", "WORLD_SIZE", "MOVIEDREAMER_TRAIN_KILL_AT_STEP"):
        env.pop(k, None)
    cfg = config_file(workdir, "run")
    r = subprocess.run([sys.executable, "-m", "moviedreamer", "train", "tokenizer", "--config", str(cfg)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (workdir / "run" / "log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in log if "loss" in x]
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)
    done = log[-1]
    assert done["event"] == "done" and done["step"] == 3 and math.isfinite(done["export_psnr"])

    from moviedreamer.tokenizer import load_keyframe_tokenizer

    export = workdir / "run" / "export"
    tok = load_keyframe_tokenizer(export)  # frozen parts through the relative sources written at export
    assert json.loads((export / "config.json").read_text())["settings"]["sources"]["vae"]["path"] == "../../vae"
    assert (export / "moviedreamer_train.json").is_file()
    frames = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    tokens = tok.encode(frames)
    assert tokens.shape == (2, 2, 8)
    assert tok.decode(tokens, seed=0).shape == (2, 3, 32, 32)


def test_stage_builds_the_decoder_from_an_sdxl_unet_folder(workdir):
    from safetensors.torch import load_file

    from moviedreamer.tokenizer.standins import make_sdxl_unet_folder

    folder = make_sdxl_unet_folder(workdir / "sdxl_unet", seed=5, pooled_dim=24)
    model = stage_for(workdir, "model.unet={}", f"model.init_unet={folder}").build_model()
    saved = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    state = model.state_dict()
    assert all(torch.equal(state[f"decoder.unet.{k}"], v) for k, v in saved.items())
    assert model.decoder.pooled_dim == 24 and model.decoder.desc_proj.out_features == 32
    assert all(p.requires_grad for p in model.parameters())  # the whole UNet fine-tunes with the new projections


def test_freeze_compressor_trains_only_the_decoder(workdir):
    with pytest.raises(UserError, match="freeze_compressor.*model.init_from"):
        stage_for(workdir, "options.freeze_compressor=true").build_model()
    folder = stage_for(workdir).build_model().save_pretrained(workdir / "to_freeze")
    stage = stage_for(workdir, "model.unet={}", f"model.init_from={folder}", "options.freeze_compressor=true", "options.mask.tokens=0.0",
                      "options.mask.uncond=0.0")
    model = stage.build_model()
    assert not any(p.requires_grad for p in model.compressor.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    batch = stage.collate(stage.samples(stage.index.load(0, stage.keys), np.random.default_rng(0)), torch.device("cpu"), torch.float32)
    loss, _ = stage.loss(model, batch)
    loss.backward()
    assert all(p.grad is None for p in model.compressor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.unet.parameters())
