"""`moviedreamer train edit`: a 3-step run of the stage through the DeepSpeed harness on a tiny UNet whose export (the
editor folder) loads back and edits frames; the equivariant augmentation moves source and target alike; the
conditioning dropout draws its three cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_edit_anchors import TINY_EDIT_UNET
from test_video_train import train_in_process

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent


def edit_config(root: Path, data: Path, **options) -> dict:
    return {"stage": "edit", "data": str(data), "out": str(root / "run"), "deepspeed": str(root / "ds.json"), "steps": 3, "save_every": 3,
            "log_every": 1, "seed": 0, "threads": 1,
            "model": {"vae": str(REPO / "moviedreamer/weights/toy/vae"), "text_encoder": str(REPO / "moviedreamer/weights/toy/clip"),
                      "text_tokens": 4, "unet": {**TINY_EDIT_UNET, "cross_attention_dim": 128}, "settings": {"steps": 2, "batch_frames": 2}},
            "options": {"resolution": 32, "samples_per_episode": 2, "equivariant": True, "equivariant_prob": 1.0, "eval_pairs": 2, **options}}


@pytest.fixture(scope="module")
def stage_root(tmp_path_factory):
    from moviedreamer.train.synthetic import write_synthetic_shards

    root = tmp_path_factory.mktemp("edit")
    data = write_synthetic_shards(root / "data", episodes=2, shots=1, frames=1, size=16)
    ds = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}, "zero_optimization": {"stage": 0}}
    (root / "ds.json").write_text(json.dumps(ds))
    return root, data


def test_three_steps_write_an_export_that_loads_back_and_edits(stage_root):
    from moviedreamer.edit.model import InstructionEditor
    from moviedreamer.edit.sampler import EditSampler

    root, data = stage_root
    cfg = root / "edit.yaml"
    cfg.write_text(yaml.safe_dump(edit_config(root, data)))
    summary = train_in_process(cfg)
    assert summary["step"] == 3 and summary["dtype"] == "float16" and np.isfinite(summary["heldout_loss"])
    export = root / "run" / "export"
    assert (export / "unet" / "diffusion_pytorch_model.safetensors").is_file() and (export / "moviedreamer_train.json").is_file()
    editor = InstructionEditor.from_pretrained(export)
    assert editor.unet.dtype == torch.float32 and editor.unet.config.in_channels == 8
    assert editor.settings.resolution == 32 and editor.settings.steps == 2 and editor.settings.text_tokens == 4
    assert editor.scheduler_config["prediction_type"] == "epsilon"
    sampler = EditSampler(editor, editor.load_vae(), editor.load_text())  # the VAE and CLIP named relative to the export
    frames = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    out = sampler.edit(frames, "make it snowy")
    assert out.shape == frames.shape and out.dtype == np.uint8
    log = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log if "loss" in r)

    # fine-tuning an editor folder: its UNet, VAE, text encoder and settings, none named again
    cfg2 = edit_config(root, data)
    cfg2.update(steps=1, save_every=1, out=str(root / "again"))
    cfg2["model"] = {"init_from": str(export)}
    (root / "again.yaml").write_text(yaml.safe_dump(cfg2))
    assert train_in_process(root / "again.yaml")["step"] == 1
    again = InstructionEditor.from_pretrained(root / "again" / "export")
    assert again.settings.text_tokens == 4 and again.settings.steps == 2 and again.load_vae().config.latent_channels == 4


def test_equivariant_pairs_move_source_and_target_by_one_transform(stage_root):
    from moviedreamer.train.config import load_config
    from moviedreamer.train.stages.edit import EditStage, same_affine

    root, data = stage_root
    cfg = root / "edit-aug.yaml"
    cfg.write_text(yaml.safe_dump(edit_config(root, data, text_drop=0.2, image_drop=0.3, both_drop=0.1)))
    stage = EditStage(load_config(cfg))
    torch.manual_seed(0)
    theta = stage.affine_thetas(4)
    assert not torch.allclose(theta[0], theta[1])  # a transform per pair ...
    img = torch.rand(1, 3, 16, 16)
    pair = torch.stack([img, img], 1).repeat(4, 1, 1, 1, 1)  # source == target
    moved = same_affine(pair, theta)
    assert torch.equal(moved[:, 0], moved[:, 1]) and not torch.allclose(moved[0, 0], img[0], atol=1e-3)  # ... the same for both frames
    stage.opts.equivariant_prob = 0.0
    assert torch.allclose(same_affine(pair, stage.affine_thetas(4)), pair, atol=1e-5)  # identity when not drawn

    rng = np.random.default_rng(0)
    samples = stage.samples({"meta": {}}, rng) * 32
    torch.manual_seed(1)
    batch = stage.collate(samples, "cpu", torch.float32)
    # text dropped alone 0.2 + with the image 0.1; image dropped alone 0.3 + with the text 0.1 (64 draws)
    assert 0.15 < batch["dropped_text"] < 0.45 and 0.25 < batch["dropped_image"] < 0.55
    assert batch["noisy"].shape == (64, 4, 8, 8) and batch["text"].shape == (64, 4, 128)
    assert (batch["source"].flatten(1).abs().sum(1) == 0).float().mean().item() == pytest.approx(batch["dropped_image"])
