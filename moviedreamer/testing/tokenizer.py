"""Tiny random parts in their real formats, for the tokenizer tests and bench/bench_tokenizer.py (no trained weights):
an open_clip folder (CLIP with a small ViT and a 248-token text tower), a diffusers AutoencoderKL folder, an SDXL-format
UNet2DConditionModel folder (addition_embed_type "text_time", saved with save_pretrained), and a whole tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from moviedreamer.encoders.openclip_folder import build_clip, save_open_clip_folder
from moviedreamer.tokenizer.autoencoder import KeyframeTokenizer, TokenizerSettings, vae_settings
from moviedreamer.tokenizer.decoder import build_unet

TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 248, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

TINY_UNET = {  # SDXL's layout (plain first level, cross-attention below, text_time), shrunk
    "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": 1, "attention_head_dim": [2, 4], "cross_attention_dim": 32,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 8, "use_linear_projection": True,
}


def make_clip_folder(out_dir: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_open_clip_folder(build_clip(TINY_CLIP_CFG), TINY_CLIP_CFG, out_dir)


def make_vae_folder(out_dir: Path, seed: int = 0, channels=(8, 8), latent_channels: int = 4, scaling_factor: float = 0.8) -> Path:
    # diffusers is heavy: loaded only when a model is built or read
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    n = len(channels)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                        block_out_channels=tuple(channels), layers_per_block=1, latent_channels=latent_channels, norm_num_groups=4,
                        sample_size=32, mid_block_add_attention=False, scaling_factor=scaling_factor)
    vae.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def make_sdxl_unet_folder(out_dir: Path, seed: int = 0, pooled_dim: int = 24, latent_channels: int = 4, sample_size: int = 16, **over) -> Path:
    """A tiny UNet saved exactly like SDXL base's `unet/` folder (config.json + diffusion_pytorch_model.safetensors)."""
    # diffusers is heavy: loaded only when a model is built or read
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    args = {**TINY_UNET, **over}
    args.setdefault("projection_class_embeddings_input_dim", pooled_dim + 6 * args["addition_time_embed_dim"])
    unet = UNet2DConditionModel(sample_size=sample_size, in_channels=latent_channels, out_channels=latent_channels, **args)
    unet.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def tiny_tokenizer(vision, vae, n_tokens: int = 2, token_dim: int = 8, descriptor_dim: int = 12, face_dim: int = 10, resolution: int = 32,
                   seed: int = 0, unet=None, **decoder):
    """A random KeyframeTokenizer around a loaded vision encoder and VAE."""
    torch.manual_seed(seed)
    vs = vae_settings(vae, resolution)
    if unet is None:
        unet = build_unet(dict(TINY_UNET), vs["latent_channels"], resolution // vs["vae_downsample"], 24)
    comp = {"patch_dim": vision.width, "pooled_dim": vision.embed_dim, "num_patches": vision.num_patches, "n_tokens": n_tokens,
            "token_dim": token_dim, "width": 32, "layers": 1, "heads": 2}
    dec = {"token_dim": token_dim, "n_tokens": n_tokens, "descriptor_dim": descriptor_dim, "face_dim": face_dim, "max_descriptors": 4,
           "max_faces": 2, "token_expand": 2, "steps": 3, "guidance": 1.0, **decoder}
    model = KeyframeTokenizer.build(comp, dec, unet, TokenizerSettings(resolution=resolution, **vs), vision, vae)
    return model.eval()
