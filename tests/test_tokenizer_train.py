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

    from moviedreamer.testing.tokenizer import make_clip_folder, make_vae_folder
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


def test_min_characters_keeps_only_the_crowded_shots(workdir):
    plain = stage_for(workdir, "options.hflip=false")
    ep = plain.index.load(0, plain.keys)
    counts = [len(shot.characters) for *_, shot in plain.story(ep).shots()]
    most = max(counts)
    crowded = stage_for(workdir, "options.hflip=false", f"options.min_characters={most}")
    kept = crowded.samples(ep, np.random.default_rng(0))
    assert len(kept) == counts.count(most) and all(len(k["faces"]) == most for k in kept)
    every = plain.samples(ep, np.random.default_rng(0))
    assert torch.equal(kept[0]["latent"], every[counts.index(most)]["latent"])  # the same keyframe's features
    none = stage_for(workdir, "options.hflip=false", f"options.min_characters={most + 1}")
    calls = []
    none.vision.encode_image = lambda x: calls.append(len(x))
    assert none.samples(ep, np.random.default_rng(0)) == [] and calls == []  # nothing encoded for the shots left out


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
        # the slots that exist stay known when masked (faces=1.0), not in the null condition (uncond=1.0)
        assert torch.equal(batch["face_given"], present & (uncond == 0.0)) and batch["desc_given"][:, :5].all() == (uncond == 0.0)


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
    from moviedreamer.script.shot_text import swap_left_right

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

    from moviedreamer.testing.tokenizer import make_sdxl_unet_folder

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
    # a decoder with new parts (slot_structure) from the same folder's weights, its compressor frozen
    new = stage_for(workdir, f"model.init_weights={folder}", "model.decoder.slot_structure=true", "options.freeze_compressor=true",
                    "model.init_exclude=[decoder.absent, decoder.count_embed]").build_model()
    assert new.decoder.config.slot_structure and not any(p.requires_grad for p in new.compressor.parameters())
    assert all(torch.equal(a, b) for a, b in zip(new.compressor.state_dict().values(), model.compressor.state_dict().values()))
    with pytest.raises(UserError, match="freeze_compressor.*without excluding the compressor"):
        stage_for(workdir, f"model.init_weights={folder}", "options.freeze_compressor=true", "model.init_exclude=[compressor.]").build_model()


def test_region_weight_map_weights_character_and_face_boxes_mirrors_them_and_keeps_mean_one():
    from moviedreamer.train.stages.tokenizer_utils import region_weight_map

    boxes, faces = {"mia": [0, 0, 32, 64]}, {"mia": [0, 0, 16, 16]}  # 64 px keyframe -> 8x8 latent (8 px per latent pixel)
    w = region_weight_map(boxes, faces, 64, (8, 8), False, 3.0, 6.0)
    assert w.shape == (8, 8) and math.isclose(float(w.mean()), 1.0, rel_tol=1e-6)
    raw = w / w[7, 7]  # the background is weight 1 before scaling to mean 1
    assert torch.allclose(raw[:2, :2], torch.full((2, 2), 6.0))  # face (larger of the two where both)
    assert torch.allclose(raw[2:, :4], torch.full((6, 4), 3.0)) and torch.allclose(raw[:, 4:], torch.ones(8, 4))
    mirrored = region_weight_map(boxes, faces, 64, (8, 8), True, 3.0, 6.0)
    assert torch.equal(mirrored, w.flip(1))
    assert torch.equal(region_weight_map(None, None, 64, (8, 8), False, 3.0, 6.0), torch.ones(8, 8))
    partial = region_weight_map({"a": [9, 9, 10, 10]}, None, 64, (8, 8), False, 2.0, 1.0)  # a 1-px box touches one latent pixel
    assert int((partial > partial.min()).sum()) == 1 and partial[1, 1] > partial[0, 0]


def test_region_weight_scales_the_loss_inside_the_boxes(workdir):
    from moviedreamer.train.stages.tokenizer_utils import region_weight_map

    plain = stage_for(workdir, "options.hflip=false")
    weighted = stage_for(workdir, "options.hflip=false", "options.region_weight.characters=4.0", "options.region_weight.faces=8.0")
    assert "shots" in weighted.keys and "shots" not in plain.keys  # the boxes are read only when they are used
    ep = weighted.index.load(0, weighted.keys)
    samples = weighted.samples(ep, np.random.default_rng(0))
    meta = ep["shots"][0]
    assert torch.equal(samples[0]["weight"], region_weight_map(meta["boxes"], meta["face_boxes"], ep["keyframes"].shape[2],
                                                                tuple(samples[0]["latent"].shape[-2:]), False, 4.0, 8.0))
    assert "weight" not in plain.samples(ep, np.random.default_rng(0))[0]
    model = plain.build_model()
    torch.manual_seed(0)
    b_plain = plain.collate(plain.samples(ep, np.random.default_rng(0)), torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    b_weighted = weighted.collate(samples, torch.device("cpu"), torch.float32)
    assert b_plain["weight"] is None and b_weighted["weight"].shape == (2, 1, *samples[0]["latent"].shape[-2:])
    with torch.no_grad():
        pred = model(b_plain["patches"], b_plain["pooled"], b_plain["noisy"], b_plain["timesteps"], b_plain["descriptors"], b_plain["desc_on"],
                     b_plain["faces"], b_plain["face_on"], b_plain["keep_tokens"], b_plain["ids"])
        loss_p, logs_p = plain.loss(model, b_plain)
        loss_w, logs_w = weighted.loss(model, b_weighted)
    sq = (pred - b_plain["target"]).pow(2)
    snr = b_plain["snr"]
    wt = snr.clamp(max=5.0) / (snr if plain.schedule["prediction_type"] == "epsilon" else snr + 1)  # min-SNR (default gamma 5)
    expected = (wt * (sq * b_weighted["weight"]).flatten(1).mean(1)).mean()
    assert torch.allclose(loss_w, expected, rtol=1e-5) and not torch.allclose(loss_p, loss_w)
    assert math.isclose(logs_p["mse"], logs_w["mse"], rel_tol=1e-6)  # the logged mse stays unweighted


def test_init_weights_starts_another_n_tokens_from_a_folder_where_shapes_match(workdir):
    folder = stage_for(workdir).build_model().save_pretrained(workdir / "n2_for_init")
    from moviedreamer.safeio import load_safetensors

    saved = load_safetensors(folder / "model.safetensors")
    with pytest.raises(UserError, match="init_weights.*does not hold.*init_exclude"):
        stage_for(workdir, "model.n_tokens=3", f"model.init_weights={folder}").build_model()
    with pytest.raises(UserError, match="init_from continues"):
        stage_for(workdir, "model.unet={}", f"model.init_from={folder}", f"model.init_weights={folder}")
    with pytest.raises(UserError, match="init_exclude needs init_weights"):
        stage_for(workdir, "model.init_exclude=[compressor.]")
    exclude = "model.init_exclude=[compressor., decoder.slot_pos, decoder.pooled_proj]"
    model = stage_for(workdir, "model.n_tokens=3", f"model.init_weights={folder}", exclude).build_model()
    state = model.state_dict()
    assert model.compressor.queries.shape[0] == 3 and state["decoder.slot_pos"].shape[0] != saved["decoder.slot_pos"].shape[0]
    unet = [k for k in state if k.startswith("decoder.unet.")]
    assert unet and all(torch.equal(state[k], saved[k]) for k in unet + ["decoder.face_proj.weight", "decoder.token_proj.0.weight"])
    assert not torch.equal(state["compressor.patch_in.weight"], saved["compressor.patch_in.weight"])  # excluded: a fresh init


def test_init_zero_adds_full_resolution_cross_attention_that_starts_as_the_source(workdir):
    folder = stage_for(workdir).build_model().save_pretrained(workdir / "plain_for_zero")
    new_blocks = ("model.unet.down_block_types=[CrossAttnDownBlock2D, CrossAttnDownBlock2D]",
                  "model.unet.up_block_types=[CrossAttnUpBlock2D, CrossAttnUpBlock2D]", "model.unet.only_cross_attention=[true, false]")
    added = ["decoder.unet.down_blocks.0.attentions", "decoder.unet.up_blocks.1.attentions"]
    exclude = f"model.init_exclude=[{', '.join(added)}]"
    zero = "model.init_zero=[decoder.unet.down_blocks.0.attentions.0.proj_out, decoder.unet.up_blocks.1.attentions.0.proj_out, " \
           "decoder.unet.up_blocks.1.attentions.1.proj_out]"
    with pytest.raises(UserError, match="init_zero needs init_weights"):
        stage_for(workdir, *new_blocks, zero)
    with pytest.raises(UserError, match="init_zero: no tensor.*down_blocks.7"):
        stage_for(workdir, *new_blocks, f"model.init_weights={folder}", exclude, "model.init_zero=[decoder.unet.down_blocks.7]").build_model()
    source = stage_for(workdir, "model.unet={}", f"model.init_from={folder}").build_model().decoder.unet.eval()
    grown = stage_for(workdir, *new_blocks, f"model.init_weights={folder}", exclude, zero).build_model().decoder.unet.eval()
    names = [k for k, _ in grown.named_parameters()]
    assert any(k.startswith("down_blocks.0.attentions.0.transformer_blocks") for k in names)  # cross-attention at full resolution now
    assert not any(k.startswith("down_blocks.0.attentions") for k, _ in source.named_parameters())
    cfg = grown.config
    torch.manual_seed(0)
    x, t = torch.randn(2, cfg.in_channels, cfg.sample_size, cfg.sample_size), torch.tensor([10, 900])
    ctx = torch.randn(2, 5, cfg.cross_attention_dim)
    pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    added_cond = {"text_embeds": torch.randn(2, pooled), "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]] * 2)}
    with torch.no_grad():
        before = source(x, t, ctx, added_cond_kwargs=added_cond).sample
        after = grown(x, t, ctx, added_cond_kwargs=added_cond).sample
        assert torch.allclose(before, after, atol=1e-6)  # the new blocks add exactly 0 at step 0 ...
        grown.down_blocks[0].attentions[0].proj_out.weight.normal_()
        assert not torch.allclose(before, grown(x, t, ctx, added_cond_kwargs=added_cond).sample, atol=1e-3)  # ... and act once trained


def test_reference_prompts_put_a_portraits_image_embedding_in_the_character_slot(workdir):
    """options.reference_prompt_p (tokenizer/references.py): a character's descriptor slot becomes the image embedding
    of a portrait of it, at its description's norm; the decoder's config says it reads such slots."""
    from moviedreamer.tokenizer.references import apply_reference_slots, reference_slot
    from moviedreamer.toyworld.dataset import write_dataset

    data = write_dataset(workdir / "toy", episodes=1, shots=3, clip_frames=2, size=64, face_size=16, progress=False)
    plain = stage_for(workdir, f"data={data}", "options.hflip=false")
    prompted = stage_for(workdir, f"data={data}", "options.hflip=false", "options.reference_prompt_p=1.0")
    assert prompted.build_model().decoder.config.reference_prompts and not plain.build_model().decoder.config.reference_prompts
    ep = plain.index.load(0, plain.keys)
    a, b = plain.samples(ep, np.random.default_rng(0)), prompted.samples(ep, np.random.default_rng(0))
    story = plain.story(ep)
    shots = [shot for _, _, _, shot in story.shots()]
    for sa, sb, shot in zip(a, b, shots):
        n = len(shot.characters)
        assert torch.equal(sa["desc"][:4], sb["desc"][:4])  # setting, action, camera, style: still the words
        for k in range(4, 4 + n):  # each character: another vector at the same norm
            assert not torch.allclose(sa["desc"][k], sb["desc"][k]) and torch.isclose(sa["desc"][k].norm(), sb["desc"][k].norm(), rtol=1e-4)
    # the slot itself: the mean direction of the frames' embeddings, at the text's norm; only referenced characters
    images, text = torch.randn(3, 8), torch.randn(8) * 5
    slot = reference_slot(images, text)
    mean = torch.nn.functional.normalize(images, dim=-1).mean(0)
    assert torch.isclose(slot.norm(), text.norm()) and torch.allclose(slot / slot.norm(), mean / mean.norm(), atol=1e-6)
    rows = torch.randn(6, 8)
    out = apply_reference_slots(rows, ["mia", "tom"], {"tom": images}, first=4)
    assert torch.equal(out[:5], rows[:5]) and torch.allclose(out[5], reference_slot(images, rows[5]))


def test_faces_of_a_composed_dataset_reach_their_characters(workdir):
    """Shards with composed casts name face crops by the world's faces: each character slot still gets its face."""
    from moviedreamer.toyworld.dataset import write_dataset

    data = write_dataset(workdir / "toy-composed", episodes=1, shots=3, clip_frames=2, size=64, face_size=16, progress=False, composed=1.0)
    stage = stage_for(workdir, f"data={data}", "options.hflip=false")
    ep = stage.index.load(0, stage.keys)
    faces = stage.episode_faces(ep)
    story = stage.story(ep)
    assert faces and set(faces) <= {c.id for c in story.characters}
    samples = stage.samples(ep, np.random.default_rng(0))
    shots = [shot for _, _, _, shot in story.shots()]
    for s, shot in zip(samples, shots):
        rows = [k for k, cid in enumerate(shot.characters) if cid in faces]
        assert rows and all(s["faces"][k].abs().sum() > 0 for k in rows)
