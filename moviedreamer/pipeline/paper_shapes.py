"""The paper profile's models at their real shapes, built on PyTorch's meta device (no memory, no weights, no files):
their parameter counts for `moviedreamer checkpoints --memory` when a component is not on disk yet, and their
forward FLOPs for the arithmetic in docs/pipeline.md (bench/bench_paper_shapes.py).

The public architectures come from their released configs: LLaMA-2-7B (transformers' LlamaConfig defaults are its
shape), the SDXL base UNet and VAE, SVD-XT's UNet and temporal-decoder VAE (diffusers' defaults are SVD's), CLIP
ViT-H/14's vision tower (open_clip's built-in ViT-H-14) and LongCLIP-L's text tower (CLIP ViT-L/14's, 248 positions).
The three trained components (keyframe tokenizer, AR model, I2V) are built the way `moviedreamer train` builds them
from configs/paper/*.yaml (the numbers below mirror those files). The insightface pack is ONNX: its size is the
release's file size, not a torch shape.
"""

from __future__ import annotations

from functools import lru_cache

import torch

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, block_out_channels=[320, 640, 1280], layers_per_block=2,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], transformer_layers_per_block=[1, 2, 10],
    attention_head_dim=[5, 10, 20], cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, use_linear_projection=True, norm_num_groups=32,
)
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, sample_size=1024,
    scaling_factor=0.13025, force_upcast=True,
)
SVD_XT_VAE = dict(  # AutoencoderKLTemporalDecoder of the SVD-XT release (diffusers' own defaults are smaller)
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
    down_block_types=["DownEncoderBlock2D"] * 4, sample_size=768, scaling_factor=0.18215, force_upcast=True,
)
VIT_H_14 = {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14}  # open_clip ViT-H-14
LONGCLIP_L_TEXT = {"context_length": 248, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}
# configs/paper/*.yaml
PAPER_DESC_DIM, PAPER_FACE_DIM, PAPER_TOKEN_DIM, PAPER_TOKENS = 768, 512, 1024, 2
PAPER_COMPRESSOR = {"width": 1024, "layers": 6, "heads": 16, "mlp_ratio": 4.0}
PAPER_DECODER = {"max_descriptors": 8, "max_faces": 4, "token_expand": 8}
PAPER_AR = {"gmm_components": 16, "mlp_hidden": 4096}
# the antelopev2 pack's two models the face pack loads (scrfd_10g_bnkps.onnx, glintr100.onnx): release file sizes, float32
ANTELOPEV2_ONNX_BYTES = 16_900_000 + 261_000_000

SHAPES = ("llama-2-7b", "sdxl-unet", "sdxl-vae", "vit-h-14", "longclip-l-text", "svd-xt-unet", "svd-xt-vae",
          "paper-compressor", "paper-decoder", "paper-ar", "paper-i2v")


def build(name: str, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """The named model at its real shape on the meta device, in `dtype`."""
    with torch.device("meta"):
        return _build(name).to(device="meta", dtype=dtype).eval()  # (a buffer made by torch.Tensor(...) starts on the CPU)


def _build(name: str) -> torch.nn.Module:
    # diffusers, transformers, open_clip are heavy: loaded only when a paper shape is built
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder, UNet2DConditionModel, UNetSpatioTemporalConditionModel
    from transformers import LlamaConfig, LlamaModel

    if name == "llama-2-7b":
        return LlamaModel(LlamaConfig(max_position_embeddings=4096))
    if name == "sdxl-unet":
        return UNet2DConditionModel(**SDXL_UNET)
    if name == "sdxl-vae":
        return AutoencoderKL(**SDXL_VAE)
    if name == "svd-xt-unet":
        return UNetSpatioTemporalConditionModel()  # diffusers' defaults are SVD(-XT)'s: 25 frames, cross-attention 1024
    if name == "svd-xt-vae":
        return AutoencoderKLTemporalDecoder(**SVD_XT_VAE)
    if name == "vit-h-14":
        from open_clip.model import CLIPVisionCfg, _build_vision_tower

        return _build_vision_tower(1024, CLIPVisionCfg(**VIT_H_14))
    if name == "longclip-l-text":
        from open_clip.model import CLIPTextCfg, _build_text_tower

        return _build_text_tower(768, CLIPTextCfg(**LONGCLIP_L_TEXT), quick_gelu=True)
    if name == "paper-compressor":
        from moviedreamer.tokenizer.compressor import CompressorConfig, TokenCompressor

        return TokenCompressor(CompressorConfig(patch_dim=VIT_H_14["width"], pooled_dim=1024, num_patches=(224 // 14) ** 2,
                                                n_tokens=PAPER_TOKENS, token_dim=PAPER_TOKEN_DIM, **PAPER_COMPRESSOR))
    if name == "paper-decoder":
        from moviedreamer.tokenizer.decoder import DecoderConfig, KeyframeDecoder

        return KeyframeDecoder(DecoderConfig(token_dim=PAPER_TOKEN_DIM, n_tokens=PAPER_TOKENS, descriptor_dim=PAPER_DESC_DIM,
                                             face_dim=PAPER_FACE_DIM, **PAPER_DECODER), _build("sdxl-unet"))
    if name == "paper-ar":
        from moviedreamer.ar.model import ARConfig, ARModel

        return ARModel(ARConfig(llama=LlamaConfig(max_position_embeddings=4096).to_dict(), desc_dim=PAPER_DESC_DIM, face_dim=PAPER_FACE_DIM,
                                token_dim=PAPER_TOKEN_DIM, n_tokens=PAPER_TOKENS, **PAPER_AR))
    if name == "paper-i2v":
        from moviedreamer.video.model import AnchoredI2V, I2VConditioning

        unet = _build("svd-xt-unet")
        return AnchoredI2V(unet, I2VConditioning(1024, 1024, PAPER_DESC_DIM, False, "add"))
    raise ValueError(f"unknown paper shape {name!r}: expected one of {', '.join(SHAPES)}")


@lru_cache(maxsize=None)
def param_count(name: str) -> int:
    """Floating-point tensors of the named model's weights (its state dict) at its real shape."""
    return sum(t.numel() for t in build(name).state_dict().values() if t.is_floating_point())
