"""The committed toy CLIP (descriptor + vision encoder), loaded through the registry, on held-out renders; and the
`train clip` stage end to end on a tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toy_encoders():
    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.registry import Registry

    torch.set_num_threads(1)
    return Profile(Registry.load("toy"))


def test_toy_clip_retrieves_held_out_renders_from_their_descriptors(toy_encoders):
    from moviedreamer.train.stages.clip import clip_retrieval

    enc = toy_encoders
    assert enc.descriptor.context_length == 248 and enc.descriptor.embed_dim == enc.vision.embed_dim
    r = clip_retrieval(enc.descriptor, enc.vision, n=100, group=100, seed=7)  # seeds the acceptance run does not use
    assert r["t2i_top1"] >= 0.8, r
    assert r["i2t_top1"] >= 0.7, r


def test_toy_clip_weights_are_small_float16_safetensors(repo):
    from safetensors import safe_open

    folder = repo / "moviedreamer" / "weights" / "toy" / "clip"
    weights = folder / "open_clip_model.safetensors"
    assert weights.stat().st_size < 20e6
    with safe_open(str(weights), framework="pt") as f:
        assert f.get_slice("token_embedding.weight").get_dtype() == "F16"
        assert {"visual.conv1.weight", "text_projection", "positional_embedding"} <= set(f.keys())


def test_shot_descriptor_reads_back_as_its_shot():
    """The training texts are the toy world's own vocabulary: the grammar reads each back to its parameters."""
    from moviedreamer.toyworld.grammar import read_action, read_camera, read_setting
    from moviedreamer.toyworld.grammar import shot_descriptor
    from moviedreamer.toyworld.story import random_render
    from moviedreamer.train.stages.clip import heldout_rng

    for i in range(50):
        rng = heldout_rng(i, seed=99)
        _, p = random_render(rng, 64)
        setting, action, camera = shot_descriptor(p, rng).split(". ")
        assert read_setting(setting) == p.scene
        assert read_action(action) == (p.action, p.direction)
        assert read_camera(camera) == (p.framing, p.move)


def test_train_clip_stage_exports_a_loadable_open_clip_folder(tmp_path):
    """`moviedreamer train clip` on a tiny model: the export loads through the encoders' own loaders."""
    from moviedreamer.encoders.clip_vision import load_vision_encoder
    from moviedreamer.encoders.longclip import load_descriptor_encoder
    from moviedreamer.train.synthetic import write_synthetic_shards

    data = write_synthetic_shards(tmp_path / "data", episodes=4, shots=1, frames=1, size=16)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "moviedreamer", "train", "clip", "--config", str(REPO / "configs/toy/clip.yaml"),
           f"data={data}", f"out={out}", f"export={out / 'export'}", "steps=2", "save_every=2", "log_every=1",
           "ds.train_micro_batch_size_per_gpu=4", "model.vision_layers=1", "model.text_layers=1", "model.vision_width=64",
           "model.text_width=64", "model.embed_dim=32", "model.image_size=32", "options.pairs_per_sample=2",
           "options.samples_per_episode=2", "options.render_size=64", "options.eval_renders=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOVIEDREAMER_NO_BAR": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = out / "export"
    assert (export / "open_clip_config.json").is_file() and (export / "moviedreamer_train.json").is_file()
    text = load_descriptor_encoder(export).encode(["a snowy field in winter. Mia waves. close-up"]).embeddings
    pooled, patches = load_vision_encoder(export).encode_image(torch.zeros(1, 3, 48, 64, dtype=torch.uint8))
    assert text.shape == (1, 32) and pooled.shape == (1, 32) and patches.shape == (1, 16, 64)
    assert np.isfinite(text.numpy()).all() and np.isfinite(pooled.numpy()).all()
