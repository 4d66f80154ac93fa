"""The `train tokenizer` stage's config: model arguments, masking rates and options (validated with pydantic)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TokenizerModelArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    encoders: str | None = Field("toy", description="checkpoints profile (name or .yaml) for the frozen parts not given below")
    vision_encoder: Path | None = None
    vision_format: str | None = None
    vae: Path | None = None
    descriptor_encoder: Path | None = None
    descriptor_format: str | None = None
    face_analysis: Path | None = None
    init_unet: Path | None = Field(None, description="an SDXL-format UNet2DConditionModel folder to start the decoder from (paper: SDXL base unet/)")
    init_unet_component: str | None = Field(None, description="PROFILE.KEY naming that folder in checkpoints.yaml, e.g. paper.sdxl_unet")
    init_from: Path | None = Field(None, description="a keyframe tokenizer folder to continue training")
    init_weights: Path | None = Field(None, description="a keyframe tokenizer folder whose tensors start this config's (new) architecture "
                                                        "wherever names and shapes match, e.g. another n_tokens")
    init_exclude: list[str] = Field(default_factory=list, description="with init_weights: name prefixes left at their random init "
                                                                      "(e.g. compressor., decoder.slot_pos)")
    init_zero: list[str] = Field(default_factory=list, description="with init_weights: name prefixes set to zero after loading, e.g. the "
                                                                   "output projections of blocks the source lacks, so that the model "
                                                                   "starts as the source and the new blocks grow from identity")
    n_tokens: int = Field(2, ge=1, le=64)
    token_dim: int = Field(64, ge=1)
    use_pooled: bool = Field(True, description="the compressor also attends to CLIP's pooled embedding")
    pooled_dim: int = Field(64, ge=1, description="a fresh UNet's pooled text_embeds width (SDXL: 1280)")
    face_dim: int | None = Field(None, ge=1, description="None: the face embedder's (or the shards' face_embeddings)")
    compressor: dict = Field(default_factory=dict, description="CompressorConfig: width, layers, heads, mlp_ratio, dropout, output_norm")
    decoder: dict = Field(default_factory=dict, description="DecoderConfig: max_descriptors, max_faces, token_expand, schedule, sampler, steps, guidance")
    unet: dict = Field(default_factory=dict, description="UNet2DConditionModel arguments (diffusers names) of a fresh decoder")

    @model_validator(mode="after")
    def _sources(self):
        if sum(x is not None for x in (self.init_unet, self.init_unet_component, self.init_from)) > 1:
            raise ValueError("give at most one of init_unet, init_unet_component, init_from")
        if self.init_weights is not None and self.init_from is not None:
            raise ValueError("init_from continues a folder's own architecture, init_weights starts this config's from it: give one")
        if self.init_exclude and self.init_weights is None:
            raise ValueError("init_exclude needs init_weights (the folder whose other tensors are loaded)")
        if self.init_zero and self.init_weights is None:
            raise ValueError("init_zero needs init_weights (it zeroes new tensors of a model started from a folder)")
        if (self.init_unet or self.init_unet_component or self.init_from) and self.unet:
            raise ValueError("model.unet describes a fresh UNet: leave it out when starting from a folder")
        if self.init_unet_component is not None and self.init_unet_component.count(".") != 1:
            raise ValueError(f"init_unet_component: expected PROFILE.KEY (e.g. paper.sdxl_unet), found {self.init_unet_component!r}")
        bad = sorted({"patch_dim", "pooled_dim", "num_patches", "n_tokens", "token_dim"} & set(self.compressor))
        bad += sorted({"token_dim", "n_tokens", "descriptor_dim", "face_dim"} & set(self.decoder))
        if bad:
            raise ValueError(f"{bad} are derived (from the encoders and model.n_tokens/token_dim): leave them out of compressor/decoder")
        return self


class MaskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: float = Field(0.1, ge=0, le=1)
    descriptors: float = Field(0.3, ge=0, le=1)
    faces: float = Field(0.3, ge=0, le=1)
    uncond: float = Field(0.1, ge=0, le=1)


class RegionWeights(BaseModel):
    """Denoising-loss weight inside the characters' boxes and their face boxes (1 elsewhere; each image's weight map is
    then scaled to mean 1). Characters are a few percent of a wide shot's pixels: without this the loss is mostly sky."""

    model_config = ConfigDict(extra="forbid")
    characters: float = Field(1.0, ge=1)
    faces: float = Field(1.0, ge=1)

    @property
    def active(self) -> bool:
        return self.characters > 1 or self.faces > 1


class TokenizerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolution: int = Field(128, ge=8, description="keyframes are resized to this square size for the VAE")
    hflip: bool = True
    random_face: bool = True
    mask: MaskOptions = Field(default_factory=MaskOptions)
    region_weight: RegionWeights = Field(default_factory=RegionWeights, description="loss weight in character / face boxes (shards' `boxes`, `face_boxes`)")
    snr_gamma: float | None = Field(5.0, gt=0, description="min-SNR loss weighting (None: plain MSE)")
    cache_size: int = Field(20000, ge=0, description="frozen-encoder outputs kept in memory ((episode, shot, mirror) entries)")
    encoder_device: str | None = Field(None, description="device of the frozen encoders (None: the engine's)")
    gradient_checkpointing: bool = False
    min_characters: int = Field(0, ge=0, description="train only on the shots with at least this many characters (a fine-tune on crowded shots)")
    reference_prompt_p: float = Field(0.0, ge=0, le=1, description="per character slot, the chance its description is replaced by the image "
                                      "embedding of a toy-world portrait of it (tokenizer/references.py): the decoder learns to draw a character "
                                      "from its reference frames (toy world)")
    freeze_compressor: bool = Field(False, description="train only the decoder (needs model.init_from): the tokens, and so a trained AR model's targets, stay as they are")
    export_samples: int = Field(8, ge=0, description="keyframes reconstructed at export to report PSNR")
    bundle_frozen: bool = Field(False, description="copy the VAE and vision encoder folders into the export")
    face_source: Literal["auto", "shards", "embedder"] = "auto"
    export_dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="16-bit halves the exported file (toy: float16; "
                                                                 "paper: bfloat16)")
