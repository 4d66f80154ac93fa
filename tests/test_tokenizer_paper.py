"""The paper profile's decoder starts from an SDXL UNet folder: loading a tiny SDXL-format stand-in (text_time,
saved with save_pretrained) adds the projections and keeps every UNet weight; bad folders are clear errors; the
paper and toy configs validate (memory plan included) without loading any weights."""

from __future__ import annotations

import json

import pytest
import torch

from moviedreamer.errors import CheckpointError, UserError


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    from moviedreamer.testing.tokenizer import make_sdxl_unet_folder

    torch.set_num_threads(1)
    return make_sdxl_unet_folder(tmp_path_factory.mktemp("sdxl") / "unet", seed=4, pooled_dim=24)


def test_decoder_from_an_sdxl_unet_folder_keeps_the_unet_and_adds_projections(sdxl, tmp_path):
    from safetensors.torch import load_file

    from moviedreamer.tokenizer.decoder import DecoderConfig, KeyframeDecoder, load_unet_folder, time_ids

    saved = load_file(str(sdxl / "diffusion_pytorch_model.safetensors"))
    dec = KeyframeDecoder(DecoderConfig(token_dim=8, descriptor_dim=12, face_dim=10, max_descriptors=3, max_faces=2, token_expand=4),
                          load_unet_folder(sdxl))
    unet = dec.unet.state_dict()
    assert unet.keys() == saved.keys() and all(torch.equal(unet[k], saved[k]) for k in saved)
    assert (dec.cross_dim, dec.pooled_dim) == (32, 24)  # read from the UNet's config, as SDXL's 2048 / 1280
    assert dec.token_proj[-1].out_features == 4 * 32 and dec.pooled_proj.out_features == 24
    assert dec.desc_proj.in_features == 12 and dec.face_proj.in_features == 10
    extra = {k for k in dec.state_dict() if not k.startswith("unet.")}
    assert {"token_proj.0.weight", "pooled_proj.weight", "desc_proj.weight", "face_proj.weight", "slot_pos", "null.token"} <= extra
    hidden, pooled = dec.context(torch.randn(1, 2, 8), torch.randn(1, 3, 12), torch.ones(1, 3, dtype=torch.bool),
                                 torch.randn(1, 2, 10), torch.ones(1, 2, dtype=torch.bool))
    with torch.no_grad():
        out = dec(torch.randn(1, 4, 16, 16), torch.tensor([500]), hidden, pooled, time_ids(128, 128, 1))
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()


def test_whole_tokenizer_on_the_sdxl_unet_round_trips(sdxl, tmp_path):
    from safetensors.torch import load_file

    from moviedreamer.encoders.clip_vision import load_vision_encoder
    from moviedreamer.tokenizer import KeyframeTokenizer
    from moviedreamer.tokenizer.autoencoder import load_vae
    from moviedreamer.tokenizer.decoder import load_unet_folder
    from moviedreamer.testing.tokenizer import make_clip_folder, make_vae_folder, tiny_tokenizer

    vision = load_vision_encoder(make_clip_folder(tmp_path / "clip"))
    vae = load_vae(make_vae_folder(tmp_path / "vae"))
    tok = tiny_tokenizer(vision, vae, unet=load_unet_folder(sdxl), resolution=32)
    out = tok.save_pretrained(tmp_path / "tok")
    again = KeyframeTokenizer.from_pretrained(out, vision_encoder=vision, vae=vae)
    saved = load_file(str(sdxl / "diffusion_pytorch_model.safetensors"))
    state = again.state_dict()
    assert all(torch.equal(state[f"decoder.unet.{k}"], v) for k, v in saved.items())
    assert json.loads((out / "config.json").read_text())["unet"]["addition_embed_type"] == "text_time"
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():  # the weights are equal bit for bit (above); a frozen copy may take attention fast paths (~1e-7 apart)
        torch.testing.assert_close(tok.decode(tok.encode(x), seed=2), again.decode(again.encode(x), seed=2), atol=1e-5, rtol=0)


def test_unet_folders_that_cannot_be_the_decoder_are_clear_errors(tmp_path):
    from moviedreamer.tokenizer.decoder import load_unet_folder
    from moviedreamer.testing.tokenizer import make_sdxl_unet_folder

    with pytest.raises(CheckpointError, match="no such folder"):
        load_unet_folder(tmp_path / "nowhere")
    sd15 = make_sdxl_unet_folder(tmp_path / "sd15", addition_embed_type=None, projection_class_embeddings_input_dim=None)
    with pytest.raises(UserError, match="addition_embed_type 'text_time'"):
        load_unet_folder(sd15)
    (sd15 / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors: expected the UNet's weights"):
        load_unet_folder(sd15)


def test_paper_and_toy_configs_validate_without_loading_weights(repo):
    from moviedreamer.train.config import load_config, memory_plan
    from moviedreamer.train.stages import load_stage

    for name in ("paper", "toy"):
        cfg = load_config(repo / "configs" / name / "tokenizer.yaml")
        stage = load_stage("tokenizer")(cfg)  # model/options validated; nothing loaded yet
        assert stage.args.n_tokens == 2
    paper = load_config(repo / "configs" / "paper" / "tokenizer.yaml")
    assert paper.zero_stage == 3 and paper.precision == "bf16" and memory_plan(paper)["fits"]
    assert load_stage("tokenizer")(paper).args.init_unet_component == "paper.sdxl_unet"
