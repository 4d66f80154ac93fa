"""The keyframe tokenizer on tiny random parts: encode shape and what trains, decode determinism, classifier-free
guidance, masking, the save/load round trip and clear errors for bad folders."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from moviedreamer.errors import CheckpointError, UserError


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from moviedreamer.encoders.clip_vision import load_vision_encoder
    from moviedreamer.tokenizer.autoencoder import load_vae
    from moviedreamer.testing.tokenizer import make_clip_folder, make_vae_folder

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tokparts")
    make_clip_folder(root / "clip")
    make_vae_folder(root / "vae")
    return root, load_vision_encoder(root / "clip"), load_vae(root / "vae")


@pytest.fixture(scope="module")
def model(parts):
    from moviedreamer.testing.tokenizer import tiny_tokenizer

    _, vision, vae = parts
    return tiny_tokenizer(vision, vae, seed=1)


def images(b=2, seed=0):
    return torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_encode_gives_n_tokens_and_only_compressor_and_decoder_train(parts, model):
    from moviedreamer.testing.tokenizer import tiny_tokenizer

    _, vision, vae = parts
    tokens = model.encode(images(3))
    assert tokens.shape == (3, 2, 8)
    assert tiny_tokenizer(vision, vae, n_tokens=4, token_dim=6).encode(images(2)).shape == (2, 4, 6)
    # the frozen parts are neither parameters nor state of the module
    names = [n for n, _ in model.named_parameters()]
    assert names and all(n.startswith(("compressor.", "decoder.")) for n in names)
    assert all(k.startswith(("compressor.", "decoder.")) for k in model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for m in (model.compressor, model.decoder) for p in m.parameters())
    assert not any(p.requires_grad for p in vision.model.parameters()) and not any(p.requires_grad for p in vae.parameters())
    # a gradient from the tokens reaches the compressor and never CLIP
    model.zero_grad()
    model.encode(images(2)).pow(2).sum().backward()
    assert model.compressor.queries.grad is not None and model.compressor.queries.grad.abs().sum() > 0
    assert all(p.grad is None for p in vision.model.parameters())
    model.zero_grad()


def test_decode_is_deterministic_per_seed_and_batch_rows_use_seed_plus_i(model):
    tokens = model.encode(images(2)).detach()
    a = model.decode(tokens, seed=7)
    assert a.shape == (2, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, model.decode(tokens, seed=7))
    assert (a - model.decode(tokens, seed=8)).abs().max() > 1e-3
    # row 1 of a batch decoded with seed 7 is the same keyframe decoded alone with seed 8
    assert torch.allclose(a[1], model.decode(tokens[1:], seed=8)[0], atol=1e-5)
    assert model.decode(tokens[0], seed=7, size=(48, 40)).shape == (1, 3, 40, 48)


def test_guidance_above_one_runs_the_null_branch_and_changes_the_image(model):
    tokens = model.encode(images(1)).detach()
    calls = []
    hook = model.decoder.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        plain = model.decode(tokens, seed=3, guidance=1.0, steps=3)
        assert calls == [1, 1, 1]  # one UNet pass per step
        calls.clear()
        guided = model.decode(tokens, seed=3, guidance=3.0, steps=3)
        assert calls == [2, 2, 2]  # conditional + unconditional rows
    finally:
        hook.remove()
    assert (plain - guided).abs().max() > 1e-4
    with pytest.raises(UserError, match="guidance"):
        model.decode(tokens, guidance=0.5)


def test_id_guidance_adds_a_tokens_only_branch_with_the_two_scale_formula(model):
    from moviedreamer.tokenizer.decoder import DecoderConfig

    tokens = model.encode(images(1)).detach()
    g = torch.Generator().manual_seed(4)
    desc, face = torch.randn(1, 3, 12, generator=g), torch.randn(1, 2, 10, generator=g)
    z = lambda a, steps=1: model.decode_latents(tokens, desc, face, seed=5, steps=steps, guidance=2.0, id_guidance=a)  # noqa: E731
    assert torch.equal(z(2.0, 3), z(None, 3))  # id_guidance = guidance: plain CFG
    seen = []
    hook = model.decoder.unet.register_forward_hook(lambda m, args, kw, out: seen.append(kw["encoder_hidden_states"]), with_kwargs=True)
    try:
        z(4.0, 3)
    finally:
        hook.remove()
    assert [h.shape[0] for h in seen] == [3, 3, 3]  # null, tokens only, all inputs
    d = model.decoder
    n_tok = d.config.n_tokens * d.config.token_expand
    null, tok_only, full = seen[0]
    assert torch.allclose(tok_only[:n_tok], full[:n_tok]) and not torch.allclose(null[:n_tok], full[:n_tok])
    assert torch.allclose(tok_only[n_tok:n_tok + 3], d.null["descriptor"] + d.slot_pos[n_tok:n_tok + 3])
    assert torch.allclose(tok_only[-d.config.max_faces:], d.null["face"] + d.slot_pos[-d.config.max_faces:])
    # one step is affine in the guided prediction, so the scales combine linearly: z(0) + z(4) = 2 z(2)
    assert torch.allclose(z(0.0) + z(4.0), 2 * z(2.0), atol=1e-4)
    assert (z(0.0) - z(2.0)).abs().max() > 1e-4
    with pytest.raises(UserError, match="id_guidance"):
        DecoderConfig(id_guidance=-1.0).check()
    # guidance 1: the null row would have weight 0, so only [tokens only, all] run: out = t + g_id (c - t)
    seen.clear()
    hook = model.decoder.unet.register_forward_hook(lambda m, args, kw, out: seen.append(kw["encoder_hidden_states"]), with_kwargs=True)
    try:
        one = lambda a: model.decode_latents(tokens, desc, face, seed=5, steps=1, guidance=1.0, id_guidance=a)  # noqa: E731
        z3 = one(3.0)
    finally:
        hook.remove()
    assert [h.shape[0] for h in seen] == [2]
    assert torch.allclose(one(0.0) + z3, 2 * one(1.5), atol=1e-4) and torch.allclose(one(1.0), one(None))


def test_descriptors_and_faces_reach_the_decoder_and_zero_rows_are_absent(model):
    tokens = model.encode(images(1)).detach()
    g = torch.Generator().manual_seed(0)
    desc, face = torch.randn(1, 3, 12, generator=g), torch.randn(1, 1, 10, generator=g)
    base = model.decode(tokens, seed=1)
    assert (model.decode(tokens, desc, seed=1) - base).abs().max() > 1e-5
    assert (model.decode(tokens, None, face, seed=1) - base).abs().max() > 1e-5
    assert torch.equal(model.decode(tokens, torch.zeros(1, 3, 12), torch.zeros(1, 2, 10), seed=1), base)
    with pytest.raises(UserError, match="width 11"):
        model.decode(tokens, torch.zeros(1, 2, 11))


def test_masked_slots_hold_the_null_embedding(model):
    d = model.decoder
    c = d.config
    b = 2
    tokens = torch.randn(b, c.n_tokens, c.token_dim)
    desc, faces = torch.randn(b, c.max_descriptors, c.descriptor_dim), torch.randn(b, c.max_faces, c.face_dim)
    on_d, on_f = torch.ones(b, c.max_descriptors, dtype=torch.bool), torch.zeros(b, c.max_faces, dtype=torch.bool)
    on_d[1, 0] = False
    keep = torch.tensor([True, False])
    with torch.no_grad():
        hidden, pooled = d.context(tokens, desc, on_d, faces, on_f, keep)
    n_tok = c.n_tokens * c.token_expand
    pos = d.slot_pos
    assert torch.allclose(hidden[1, :n_tok], d.null["token"] + pos[:n_tok])  # row 1: tokens masked
    assert not torch.allclose(hidden[0, :n_tok], d.null["token"] + pos[:n_tok])
    assert torch.allclose(hidden[1, n_tok], d.null["descriptor"] + pos[n_tok])  # one masked descriptor slot
    assert not torch.allclose(hidden[1, n_tok + 1], d.null["descriptor"] + pos[n_tok + 1])
    assert torch.allclose(hidden[:, -c.max_faces:], (d.null["face"] + pos[-c.max_faces:]).expand(b, -1, -1))  # all faces masked
    assert torch.equal(pooled[1], d.null_pooled) and not torch.equal(pooled[0], d.null_pooled)


def test_slot_structure_tells_absent_from_masked_slots_and_counts_the_face_slots(parts):
    from moviedreamer.tokenizer.decoder import pad_slots
    from moviedreamer.testing.tokenizer import tiny_tokenizer

    _, vision, vae = parts
    d = tiny_tokenizer(vision, vae, seed=2, slot_structure=True, max_faces=3).decoder
    with torch.no_grad():
        d.count_embed.weight.normal_()  # trained weights; a fresh one starts at zero (a no-op)
    c, b = d.config, 3
    tokens = torch.randn(b, c.n_tokens, c.token_dim)
    desc, desc_on, desc_given = pad_slots([torch.randn(2, 12), torch.randn(3, 12), torch.randn(3, 12)], c.max_descriptors, 12, "d")
    faces, face_on, face_given = pad_slots([torch.randn(1, 10), torch.cat([torch.randn(1, 10), torch.zeros(1, 10)]), torch.randn(2, 10)],
                                           c.max_faces, 10, "f")
    assert face_given.sum(1).tolist() == [1, 2, 2] and face_on.sum(1).tolist() == [1, 1, 2]  # a zero row is given, not present
    face_on[2, 1] = False  # masked in training
    with torch.no_grad():
        hidden, pooled = d.context(tokens, desc, desc_on, faces, face_on, None, desc_given, face_given)
        plain, plain_pooled = d.context(tokens, desc, desc_on, faces, face_on)  # nothing given: every empty slot is absent
    pos, f0 = d.slot_pos, c.n_tokens * c.token_expand + c.max_descriptors
    masked, absent = d.null["face"] + pos[f0 + 1], d.absent["face"] + pos[f0 + 1]
    assert torch.allclose(hidden[0, f0 + 1], absent) and torch.allclose(hidden[1, f0 + 1], masked) and torch.allclose(hidden[2, f0 + 1], masked)
    assert not torch.allclose(masked, absent)
    n_d = c.n_tokens * c.token_expand
    assert torch.allclose(hidden[0, n_d + 2], d.absent["descriptor"] + pos[n_d + 2])  # row 0 has 2 descriptors: slot 2 is absent
    assert torch.allclose(plain[1, f0 + 1], absent)
    assert torch.allclose(pooled - plain_pooled, d.count_embed.weight[[1, 2, 2]] - d.count_embed.weight[0])  # 1, 2, 2 face slots
    legacy = tiny_tokenizer(vision, vae, seed=2, max_faces=3).decoder  # without slot_structure `given` changes nothing
    with torch.no_grad():
        a = legacy.context(tokens, desc, desc_on, faces, face_on, None, desc_given, face_given)
        z = legacy.context(tokens, desc, desc_on, faces, face_on)
    assert all(torch.equal(x, y) for x, y in zip(a, z)) and not hasattr(legacy, "count_embed")


def test_mask_rates_are_respected():
    from moviedreamer.tokenizer.decoder import MaskRates, draw_keep

    g = torch.Generator().manual_seed(0)
    kt, kd, kf = draw_keep(500, 8, 4, MaskRates(tokens=0.0, descriptors=0.0, faces=1.0, uncond=0.0), g)
    assert kt.all() and kd.all() and not kf.any()
    kt, kd, kf = draw_keep(500, 8, 4, MaskRates(tokens=0.0, descriptors=0.0, faces=0.0, uncond=1.0), g)
    assert not kt.any() and not kd.any() and not kf.any()
    kt, kd, kf = draw_keep(4000, 8, 4, MaskRates(tokens=0.2, descriptors=0.3, faces=0.5, uncond=0.0), g)
    assert abs(1 - kt.float().mean() - 0.2) < 0.03 and abs(1 - kd.float().mean() - 0.3) < 0.02 and abs(1 - kf.float().mean() - 0.5) < 0.02
    kt, _, kf = draw_keep(4000, 8, 4, MaskRates(tokens=0.0, descriptors=0.0, faces=0.0, uncond=0.25), g)
    assert abs(1 - kt.float().mean() - 0.25) < 0.03 and torch.equal(kf.all(1), kt)  # a dropped row drops everything
    with pytest.raises(UserError, match="uncond"):
        MaskRates(uncond=1.5).check()


def test_save_and_load_round_trip_bitwise(parts, model, tmp_path):
    from moviedreamer.registry import FORMATS
    from moviedreamer.tokenizer import KeyframeTokenizer, load_keyframe_tokenizer

    root, vision, vae = parts
    model.settings.sources = {"vision_encoder": {"path": str(root / "clip"), "format": "open_clip-folder"}, "vae": {"path": str(root / "vae")}}
    out = model.save_pretrained(tmp_path / "tok")
    assert FORMATS["moviedreamer"].check(out)
    assert json.loads((out / "config.json").read_text())["format"] == "moviedreamer"
    loaded = load_keyframe_tokenizer(out)  # frozen parts found through config.json sources
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    x = images(2, seed=5)
    with torch.no_grad():
        assert torch.equal(model.encode(x), loaded.encode(x))
        tokens = model.encode(x)
    assert torch.equal(model.decode(tokens, seed=4, guidance=2.0), loaded.decode(tokens, seed=4, guidance=2.0))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    half = KeyframeTokenizer.from_pretrained(model.save_pretrained(tmp_path / "half", dtype=torch.float16))
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * (out / "model.safetensors").stat().st_size
    assert all(v.dtype == torch.float32 and torch.equal(v, a[k].half().float()) for k, v in half.state_dict().items())
    # relative sources resolve against the folder; a bundled copy inside the folder wins
    cfg = json.loads((out / "config.json").read_text())
    cfg["settings"]["sources"]["vae"] = {"path": "../nowhere"}
    (out / "config.json").write_text(json.dumps(cfg))
    shutil.copytree(root / "vae", out / "vae")
    assert KeyframeTokenizer.from_pretrained(out).decode(tokens, seed=4).shape == (2, 3, 32, 32)


def test_bad_folders_give_clear_errors(model, tmp_path):
    from moviedreamer.encoders.clip_vision import load_vision_encoder
    from moviedreamer.tokenizer import KeyframeTokenizer
    from moviedreamer.testing.tokenizer import make_clip_folder

    with pytest.raises(CheckpointError, match="no such folder"):
        KeyframeTokenizer.from_pretrained(tmp_path / "missing")
    out = model.save_pretrained(tmp_path / "tok")
    (out / "model.safetensors").rename(tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors: expected this file"):
        KeyframeTokenizer.from_pretrained(out)
    (tmp_path / "w.safetensors").rename(out / "model.safetensors")
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "format": "diffusers"}))
    with pytest.raises(CheckpointError, match="expected format 'moviedreamer'"):
        KeyframeTokenizer.from_pretrained(out)
    (out / "config.json").write_text(json.dumps({**cfg, "compressor": {**cfg["compressor"], "width": 16}}))
    with pytest.raises(CheckpointError, match="does not match config.json"):
        KeyframeTokenizer.from_pretrained(out)
    (out / "config.json").write_text(json.dumps({**cfg, "settings": {**cfg["settings"], "sources": {}}}))
    bare = KeyframeTokenizer.from_pretrained(out)
    with pytest.raises(UserError, match="sources.vision_encoder"):
        bare.encode(images(1))
    other = make_clip_folder(tmp_path / "other_clip")
    cfg_other = json.loads((other / "open_clip_config.json").read_text())
    cfg_other["model_cfg"]["vision_cfg"]["patch_size"] = 16  # 4 patches instead of 16
    (other / "open_clip_config.json").write_text(json.dumps(cfg_other))
    with pytest.raises(CheckpointError, match="trained on"):
        bare.attach(vision=load_vision_encoder(_reshaped(other)))


def _reshaped(folder):
    """Rewrite a CLIP folder's weights to match its edited config (a different, valid vision encoder)."""
    from moviedreamer.encoders.openclip_folder import build_clip, save_open_clip_folder

    cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    save_open_clip_folder(build_clip(cfg), cfg, folder)
    return folder


def test_renderer_satisfies_the_pipeline_protocol(model):
    from moviedreamer.pipeline.components import KeyframeRenderer
    from moviedreamer.tokenizer import KeyframeCondition, TokenizerRenderer

    r = TokenizerRenderer(model, steps=2)
    assert isinstance(r.fingerprint, str) and callable(r.render) and hasattr(KeyframeRenderer, "render")
    tokens = model.encode(images(1))[0].detach()  # a plan's tokens: [n, d]
    cond = KeyframeCondition(torch.randn(3, 12), torch.randn(1, 10))
    img = r.render(tokens, cond, seed=4, size=(40, 24))
    assert img.shape == (24, 40, 3) and img.dtype.name == "uint8"
    assert (img == r.render(tokens, cond, seed=4, size=(40, 24))).all()
    assert (img != r.render(tokens, {"descriptors": None, "faces": None}, seed=4, size=(40, 24))).any()
    with pytest.raises(UserError, match="keyframe condition"):
        r.render(tokens, "a beach", seed=4, size=(32, 32))


def test_psnr_and_ssim():
    from moviedreamer.tokenizer.evaluate import psnr, ssim

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(2)) and (psnr(x, x) > 100).all()
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    noisier = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert (ssim(x, noisier) < ssim(x, noisy)).all() and (ssim(x, noisy) < 1).all()
    assert torch.allclose(psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)), torch.tensor([20.0]))


def test_evaluate_splits_judge_character_agreement_by_the_originals_framing(parts, model):
    from moviedreamer.tokenizer.evaluate import evaluate

    _, vision, _ = parts
    imgs = images(4, seed=5)
    pooled, patches = vision.encode_image((imgs * 255).to(torch.uint8))
    c = model.decoder.config
    items = [{"patches": patches[i], "pooled": pooled[i], "desc": torch.randn(2, c.descriptor_dim), "faces": torch.randn(1, c.face_dim),
              "reference": imgs[i]} for i in range(4)]

    class Judge:  # originals: wide, wide, close, close; reconstructions get the characters of 1 wide and both close-ups right
        calls = 0

        def predict(self, frames):
            Judge.calls += 1
            orig = Judge.calls % 2 == 1
            chars = [("mia",), ("tom",), ("ada",), ("ben",)] if orig else [("mia",), ("kit",), ("ada",), ("ben",)]
            return [{"scene": "beach", "characters": chars[i], "framing": ["wide", "wide", "close", "close"][i]} for i in range(len(frames))]

    r = evaluate(model, items, ("all",), judge=Judge(), batch=4, steps=1)["all"]
    assert r["judge_characters"] == 0.75 and r["judge_characters_wide"] == 0.5 and r["judge_characters_close"] == 1.0
    assert "judge_characters_medium" not in r and r["images"] == 4 and r["judge_scene"] == 1.0
