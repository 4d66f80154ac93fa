"""The `paper` profile of checkpoints.yaml in tiny random stand-ins, every component in the format its real release
(or this project's paper export) has, at the same paths under one models folder: what `$MOVIEDREAMER_MODELS` points at.

    Llama-2-7b-hf/                      LLaMA-2 tokenizer (tokenizer.model + tokenizer.json) + LlamaForCausalLM (safetensors)
    longclip/longclip-L.pt              a LongCLIP checkpoint (OpenAI key names + positional_embedding_res), torch.save'd
    CLIP-ViT-H-14/                      LAION's open_clip layout (open_clip_config.json + open_clip_pytorch_model.bin)
    insightface/models/antelopev2/      scrfd_10g_bnkps.onnx + glintr100.onnx
    stable-diffusion-xl-base-1.0/vae/   AutoencoderKL (force_upcast, SDXL's scaling factor)
    stable-diffusion-xl-base-1.0/unet/  UNet2DConditionModel with text_time (SDXL's layout)
    stable-video-diffusion-img2vid-xt/  model_index.json, unet/, vae/ (temporal decoder), image_encoder/, scheduler/
    moviedreamer-paper/keyframe_tokenizer, ar, i2v    what `moviedreamer train tokenizer|ar|i2v` export with the paper
                                        configs: bf16 weights, the decoder started from the SDXL UNet folder, the AR model
                                        from the LLaMA folder, the I2V from the SVD folder with its VAE and image encoder
                                        bundled; random, never trained

`make_paper_models(root)` writes them and `root/paper.yaml` (the paper entry of checkpoints.yaml with root ".").
The pipeline then runs through exactly the loaders the real weights go through, at 64 x 64, on a CPU, in seconds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import yaml

from moviedreamer.ar.model import ARModel
from moviedreamer.encoders.clip_vision import load_vision_encoder
from moviedreamer.encoders.text import load_text_tokenizer
from moviedreamer.registry import CHECKPOINTS_FILE, Registry
from moviedreamer.testing.formats import (
    make_insightface_pack,
    make_llama_model_folder,
    make_llama_tokenizer_folder,
    make_longclip_pt,
    make_open_clip_vith_folder,
    make_svd_folder,
)
from moviedreamer.testing.tokenizer import make_sdxl_unet_folder, make_vae_folder, tiny_tokenizer
from moviedreamer.tokenizer.autoencoder import load_vae
from moviedreamer.tokenizer.decoder import load_unet_folder
from moviedreamer.video.model import AnchoredI2V, I2VSettings

EXPORT_DTYPE = torch.bfloat16  # what the paper configs export (export_dtype: bfloat16)
DESC_DIM, FACE_DIM, TOKEN_DIM = 32, 32, 8  # LongCLIP-L 768, ArcFace 512, paper tokens 1024: shrunk


def paper_entry() -> dict:
    """checkpoints.yaml's `paper` profile entry, as written there."""
    return yaml.safe_load(CHECKPOINTS_FILE.read_text(encoding="utf-8"))["profiles"]["paper"]


def make_paper_models(root: str | Path, seed: int = 0, resolution: int = 64, svd_frames: int = 4,
                      i2v_settings: dict | None = None, decoder: dict | None = None) -> Path:
    """Write every component of the paper profile under `root`; returns `root/paper.yaml` (a profile named "paper").
    `i2v_settings` / `decoder`: sampling settings of the exported I2V / keyframe decoder (small by default)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entry = paper_entry()
    profile = root / "paper.yaml"
    profile.write_text(yaml.safe_dump({**entry, "root": "."}, sort_keys=False))
    reg = Registry.load(str(profile))
    at = lambda key: reg.component(key).path  # noqa: E731

    llama = at("ar_backbone")
    make_llama_tokenizer_folder(llama)
    make_llama_model_folder(llama, vocab=len(load_text_tokenizer(at("text_tokenizer"))), seed=seed)
    longclip = make_longclip_pt(at("descriptor_encoder").parent, width=64, layers=1, embed_dim=DESC_DIM, seed=seed)
    if longclip != at("descriptor_encoder"):
        longclip.rename(at("descriptor_encoder"))
    make_open_clip_vith_folder(at("vision_encoder"), seed=seed)
    make_insightface_pack(at("face_analysis"), "antelopev2", seed=seed, embed_dim=FACE_DIM)
    make_vae_folder(at("vae"), seed=seed, channels=(8, 8, 8), scaling_factor=0.13025)  # SDXL's factor; downsamples 4x
    make_sdxl_unet_folder(at("sdxl_unet"), seed=seed, pooled_dim=24, sample_size=resolution // 4)
    make_svd_folder(at("svd"), seed=seed, image_size=resolution, num_frames=svd_frames, vae_levels=3)  # SVD's VAE downsamples 8x

    _keyframe_tokenizer(reg, seed, resolution, decoder or {})
    torch.manual_seed(seed)
    ar = ARModel.from_backbone(llama, desc_dim=DESC_DIM, face_dim=FACE_DIM, token_dim=TOKEN_DIM, n_tokens=2, gmm_components=3,
                               window_shots=4, temperature=0.8, dropout=0.5)
    ar.eval().save_pretrained(at("ar"), EXPORT_DTYPE)
    _i2v(reg, seed, i2v_settings or {})
    return profile


def _keyframe_tokenizer(reg: Registry, seed: int, resolution: int, decoder: dict) -> None:
    """The decoder from the SDXL UNet folder, on the profile's ViT-H and SDXL VAE (named in `sources`, relative)."""
    out = reg.component("keyframe_tokenizer").path
    vision_path, vae_path = reg.component("vision_encoder").path, reg.component("vae").path
    vision = load_vision_encoder(vision_path, reg.component("vision_encoder").format)
    settings = {"steps": 2, "guidance": 2.0, "candidates": 2, "accept": 0.99, "max_descriptors": 8, "max_faces": 4, **decoder}
    tok = tiny_tokenizer(vision, load_vae(vae_path), n_tokens=2, token_dim=TOKEN_DIM, descriptor_dim=DESC_DIM, face_dim=FACE_DIM,
                         resolution=resolution, seed=seed, unet=load_unet_folder(reg.component("sdxl_unet").path), **settings)
    tok.settings.sources = {"vision_encoder": {"path": os.path.relpath(vision_path, out), "format": reg.component("vision_encoder").format},
                            "vae": {"path": os.path.relpath(vae_path, out)}}
    tok.save_pretrained(out, EXPORT_DTYPE)


def _i2v(reg: Registry, seed: int, overrides: dict) -> None:
    """The I2V as `train i2v --config configs/paper/i2v.yaml` exports it: from the SVD folder, the LongCLIP descriptor
    added to the anchor (mode "add"), SVD's VAE and image encoder bundled (export_vae, export_image_encoder)."""
    svd, out = reg.component("svd").path, reg.component("i2v").path
    torch.manual_seed(seed)
    settings = I2VSettings(**{"num_frames": 4, "overlap": 1, "steps": 2, "tau": 1, "guidance_min": 1.0, "guidance_max": 2.0, "fps": 8,
                              "noise_aug": 0.02, "decode_chunk": 4, **overrides})
    model = AnchoredI2V.from_svd(svd, DESC_DIM, "add", settings)
    with torch.no_grad():  # a fresh descriptor projection is zero (SVD exactly): make the descriptor reach the UNet
        model.conditioning.descriptor_proj.weight.normal_(0, 0.2)
    model.settings.image_encoder = {"path": "image_encoder", "format": "hf-clip-vision"}  # bundled, named relative to the folder
    model.eval().to(EXPORT_DTYPE).save_pretrained(out)
    for sub in ("vae", "image_encoder"):
        shutil.copytree(svd / sub, out / sub, dirs_exist_ok=True)
