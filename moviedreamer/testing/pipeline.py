"""A tiny profile in the real formats for the pipeline tests: the committed toy encoders and VAE, plus a random
keyframe tokenizer, AR model and I2V model small enough that a whole movie renders in seconds. It exercises
exactly the code `make movie` runs (profile.py, every component's from_pretrained), without trained weights."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from moviedreamer.ar.model import ARConfig, ARModel
from moviedreamer.pipeline.profile import Profile
from moviedreamer.testing.ar import tiny_llama_dict
from moviedreamer.testing.tokenizer import tiny_tokenizer
from moviedreamer.tokenizer.autoencoder import load_vae
from moviedreamer.video.model import AnchoredI2V, I2VSettings

TOY = Path(__file__).resolve().parents[1] / "weights" / "toy"
ENCODERS = {"text_tokenizer": ("text_tokenizer", "hf-tokenizer"), "descriptor_encoder": ("clip", "open_clip-folder"),
            "vision_encoder": ("clip", "open_clip-folder"), "face_analysis": ("faces", "insightface-pack"), "vae": ("vae", "diffusers")}
SVD_UNET = dict(
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(32, 32), addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
    layers_per_block=1, cross_attention_dim=32, num_attention_heads=(1, 1),
)


def make_tiny_profile(out_dir: str | Path, seed: int = 0, n_tokens: int = 2, token_dim: int = 8) -> Path:
    """Write `out_dir/profile.yaml` and the three random components next to it; returns the profile's path."""
    out_dir = Path(out_dir)
    enc = Profile.load("toy")
    vae = load_vae(TOY / "vae")
    desc_dim, face_dim = enc.descriptor.embed_dim, enc.faces.embed_dim

    tok = tiny_tokenizer(enc.vision, vae, n_tokens=n_tokens, token_dim=token_dim, descriptor_dim=desc_dim, face_dim=face_dim,
                         resolution=64, seed=seed, max_descriptors=8, max_faces=4)
    tok.settings.sources = {"vision_encoder": {"path": str(TOY / "clip"), "format": "open_clip-folder"}, "vae": {"path": str(TOY / "vae")}}
    tok.save_pretrained(out_dir / "keyframe_tokenizer")

    torch.manual_seed(seed)
    llama = tiny_llama_dict(hidden=32, layers=2, heads=4, kv_heads=2, vocab=len(enc.text_tokenizer), max_positions=4096)
    ar = ARModel(ARConfig(llama=llama, desc_dim=desc_dim, face_dim=face_dim, token_dim=token_dim, n_tokens=n_tokens, gmm_components=3,
                          window_shots=4, temperature=0.8)).eval()
    ar.save_pretrained(out_dir / "ar")

    torch.manual_seed(seed)
    settings = I2VSettings(num_frames=4, overlap=1, steps=2, tau=1, noise_aug=0.0, decode_chunk=4)
    unet = dict(SVD_UNET, sample_size=16, in_channels=2 * vae.config.latent_channels, out_channels=vae.config.latent_channels, num_frames=4)
    i2v = AnchoredI2V.build(unet, enc.vision.embed_dim, desc_dim, "token", settings)
    i2v.settings.vae_scaling_factor = float(vae.config.scaling_factor)
    i2v.save_pretrained(out_dir / "i2v")

    components = {key: {"path": str(TOY / sub), "format": fmt} for key, (sub, fmt) in ENCODERS.items()}
    components |= {"keyframe_tokenizer": {"path": "keyframe_tokenizer", "format": "moviedreamer"}, "ar": {"path": "ar", "format": "moviedreamer"},
                   "i2v": {"path": "i2v", "format": "diffusers"}}
    profile = out_dir / "profile.yaml"
    profile.write_text(yaml.safe_dump({"description": "tiny random pipeline stand-ins around the toy encoders", "root": ".",
                                       "components": components}, sort_keys=False))
    return profile
