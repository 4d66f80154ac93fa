"""Vision encoder: each backend gives finite pooled embeddings + patch tokens of the right shapes; the open_clip
backend equals open_clip's own forward; bad folders and inputs give clear errors."""

import json

import pytest
import torch

from encoder_standins import TINY_VIT_H_CFG, make_hf_clip_full, make_hf_clip_vision, make_open_clip_vith_folder
from moviedreamer.encoders.clip_vision import load_vision_encoder
from moviedreamer.errors import CheckpointError, UserError


def _check(enc, b=2, h=72, w=96):
    images = torch.rand(b, 3, h, w)
    pooled, tokens = enc.encode_image(images)
    assert pooled.shape == (b, enc.embed_dim)
    assert tokens.shape == (b, enc.num_patches, enc.width)
    assert torch.isfinite(pooled).all() and torch.isfinite(tokens).all()
    return images, pooled, tokens


def test_toy_open_clip_folder_equals_open_clip(tmp_path):
    from moviedreamer.encoders.openclip_folder import build_clip, save_open_clip_folder, toy_clip_config

    cfg = toy_clip_config(embed_dim=16, image_size=32, patch_size=8, vision_width=32, vision_layers=2, text_width=32, text_heads=2, text_layers=1)
    torch.manual_seed(0)
    clip = build_clip(cfg).eval()
    save_open_clip_folder(clip, cfg, tmp_path / "clip")
    enc = load_vision_encoder(tmp_path / "clip", "open_clip-folder")
    images, pooled, tokens = _check(enc)
    assert tokens.shape == (2, 16, 32)
    x = enc.preprocess(images)
    assert x.shape == (2, 3, 32, 32)
    with torch.no_grad():
        clip.visual.output_tokens = True
        ref_pooled, ref_tokens = clip.visual(x)
    torch.testing.assert_close(pooled, ref_pooled)
    torch.testing.assert_close(tokens, ref_tokens)
    # uint8 and float [0, 1] inputs are the same image
    u8 = (images * 255).round().to(torch.uint8)
    torch.testing.assert_close(enc.encode_image(u8)[0], enc.encode_image(u8.float() / 255)[0])
    # ... and so are decoded frames: uint8 arrays [B, H, W, 3] (numpy)
    torch.testing.assert_close(enc.encode_image(u8.permute(0, 2, 3, 1).numpy())[0], enc.encode_image(u8)[0])


def test_laion_vit_h_folder_with_bin_weights(tmp_path):
    enc = load_vision_encoder(make_open_clip_vith_folder(tmp_path / "CLIP-ViT-H-14"))
    _check(enc)
    assert (enc.image_size, enc.num_patches, enc.width) == (56, 16, 160)
    assert enc.model.transformer.resblocks[0].attn.num_heads == 2  # width 160 / head_width 80
    assert not any(p.is_meta for p in enc.model.parameters())


def test_bare_open_clip_checkpoint_of_a_named_architecture(tmp_path):
    import open_clip

    folder = make_open_clip_vith_folder(tmp_path / "vith")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "Tiny-ViT-H-14-standin.json").write_text(json.dumps(TINY_VIT_H_CFG))
    open_clip.add_model_config(tmp_path / "cfg")
    from moviedreamer.encoders.clip_vision import load_open_clip_checkpoint

    enc = load_open_clip_checkpoint(folder / "open_clip_pytorch_model.bin", arch="Tiny-ViT-H-14-standin")
    _, pooled, _ = _check(enc)
    # the named architecture's geometry (56 px / patch 14 = 16 patches, width 160, embed 32), and the same weights
    # as the folder loader reads from the same file
    assert (enc.num_patches, enc.width, enc.embed_dim) == (16, 160, 32)
    same = load_vision_encoder(folder, "open_clip-folder")
    images = torch.rand(2, 3, 56, 56)
    assert torch.allclose(enc.encode_image(images)[0], same.encode_image(images)[0], atol=1e-5)


def test_hf_clip_vision_folder(tmp_path):
    enc = load_vision_encoder(make_hf_clip_vision(tmp_path / "CLIP-ViT-H-14"), "hf-clip-vision")
    _check(enc, b=1, h=56, w=56)
    assert (enc.num_patches, enc.width, enc.embed_dim) == (16, 64, 32)
    assert len(enc.fingerprint) == 16


def test_whole_hf_clip_model_folder_gives_its_vision_tower(tmp_path):
    from transformers import CLIPModel

    folder = make_hf_clip_full(tmp_path / "laion-CLIP-ViT-H-14")
    enc = load_vision_encoder(folder, "hf-clip-vision")
    images, pooled, _ = _check(enc, b=1, h=56, w=56)
    with torch.no_grad():
        ref = CLIPModel.from_pretrained(str(folder)).eval()
        out = ref(pixel_values=enc.preprocess(images), input_ids=torch.tensor([[49406, 320, 49407]]))
    torch.testing.assert_close(torch.nn.functional.normalize(pooled), out.image_embeds)


def test_truncated_hf_weights_name_the_file(tmp_path):
    folder = make_hf_clip_vision(tmp_path / "v")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: could not load"):
        load_vision_encoder(folder)


def test_missing_or_malformed_folders_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_vision_encoder(tmp_path, "hf-clip-vision")
    (tmp_path / "config.json").write_text("[1, 2")
    with pytest.raises(CheckpointError, match="config.json: expected valid JSON"):
        load_vision_encoder(tmp_path, "hf-clip-vision")
    (tmp_path / "config.json").write_text('{"model_type": "clip_vision_model"}')
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_vision_encoder(tmp_path, "hf-clip-vision")

    oc = tmp_path / "oc"
    oc.mkdir()
    with pytest.raises(CheckpointError, match="open_clip_config.json"):
        load_vision_encoder(oc, "open_clip-folder")
    (oc / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_VIT_H_CFG}))
    with pytest.raises(CheckpointError, match="open_clip_model.safetensors"):
        load_vision_encoder(oc, "open_clip-folder")
    (oc / "open_clip_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="open_clip_model.safetensors"):
        load_vision_encoder(oc, "open_clip-folder")


def test_weights_of_another_architecture_are_refused(tmp_path):
    folder = make_open_clip_vith_folder(tmp_path / "vith")
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    cfg["model_cfg"]["vision_cfg"]["width"] = 240
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match.*wrong shape"):
        load_vision_encoder(folder)


def test_bad_images_are_user_errors(tmp_path):
    enc = load_vision_encoder(make_hf_clip_vision(tmp_path / "v"))
    with pytest.raises(UserError, match=r"\[B, 3, H, W\]"):
        enc.encode_image(torch.rand(2, 4, 32, 32))
    with pytest.raises(UserError, match=r"in \[0, 1\]"):
        enc.encode_image(torch.rand(1, 3, 32, 32) * 255)
    pooled, tokens = enc.encode_image(torch.rand(3, 40, 40))  # one image without batch dimension
    assert pooled.shape == (1, 32)
