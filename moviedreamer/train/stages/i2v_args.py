"""The `model:` and `options:` sections of `moviedreamer train i2v` (pydantic: unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SETTINGS_KEYS = ("num_frames", "overlap", "steps", "tau", "guidance_min", "guidance_max", "guidance_segments", "noise_aug", "noise_share", "motion_bucket",
                 "motion_scale", "decode_chunk", "pin_keyframe", "descriptor_template", "candidates", "candidate_segments", "accept", "flow_max",
                 "inner_guidance", "inner_guidance_share",
                 "motion_weight", "fast_motion", "fast_noise_share", "presence_weight", "presence_floor")


class I2VModelArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    init_from: Path | None = Field(None, description="an SVD / SVD-XT diffusers folder to fine-tune (unet/, vae/, image_encoder/, scheduler/), "
                                   "or an i2v folder of `moviedreamer train i2v` to train further")
    init_from_component: str | None = Field(None, description="or the same named as PROFILE.KEY of checkpoints.yaml, e.g. paper.svd")
    vae: Path | None = Field(None, description="diffusers VAE folder (default with init_from: its vae/)")
    vision_encoder: Path | None = Field(None, description="the anchor's CLIP vision encoder (default with init_from: its image_encoder/)")
    vision_format: str | None = None
    descriptor_encoder: Path | None = Field(None, description="descriptor encoder for the shot's action/camera text (None: no descriptor token)")
    descriptor_format: str | None = None
    descriptor_component: str | None = Field(None, description="or the descriptor encoder named as PROFILE.KEY, e.g. paper.descriptor_encoder")
    descriptor_mode: Literal["token", "add"] = "token"
    descriptor_words: int | None = Field(None, ge=0, description="also attend to the descriptor's first N per-word states (video/conditioning.py descriptor_inputs); "
                                         "None: 0 for a fresh model, a continued one keeps its own; N on a folder without them adds them")
    unet: dict = Field(default_factory=dict, description="UNetSpatioTemporalConditionModel arguments (diffusers names) of a fresh model")
    settings: dict = Field(default_factory=dict, description=f"sampling defaults saved with the model: {', '.join(SETTINGS_KEYS)}")
    flow_channels: int | None = Field(None, ge=0, description="VAE latent channels of the flow picture denoised with the frames (VideoJAM, "
                                      "video/motion.py): 0 or the VAE's latent channels; None: 0 for a fresh model, a continued one keeps its "
                                      "own; given to an appearance-only folder, adds them")
    residual: bool | None = Field(None, description="the UNet denoises each frame's difference from the segment's conditioning frame "
                                  "(what stays still is exact by construction); a fresh model only, a continued one keeps its own")
    anchor_latent: bool | None = Field(None, description="the UNet also takes the keyframe's latents on every frame (long shots keep their "
                                       "picture); None: off for a fresh model, a continued one keeps its own; true on a folder without adds them")
    export_vae: bool = Field(False, description="copy the VAE into export/vae (when it is not the profile's VAE, e.g. SVD's)")
    export_image_encoder: bool = Field(False, description="copy the anchor's vision encoder folder into export/image_encoder (when it is "
                                       "not the profile's vision_encoder, e.g. SVD's image_encoder/): the clips render with the encoder "
                                       "the model was trained with")

    @model_validator(mode="after")
    def _sources(self):
        if self.init_from is not None and self.init_from_component is not None:
            raise ValueError("give model.init_from or model.init_from_component, not both")
        for key in ("init_from_component", "descriptor_component"):
            ref = getattr(self, key)
            if ref is not None and ref.count(".") != 1:
                raise ValueError(f"model.{key}: expected PROFILE.KEY (e.g. paper.svd), found {ref!r}")
        if self.descriptor_encoder is not None and self.descriptor_component is not None:
            raise ValueError("give model.descriptor_encoder or model.descriptor_component, not both")
        if self.init_from is None and self.init_from_component is None and (self.vae is None or self.vision_encoder is None):
            raise ValueError("a fresh model needs model.vae and model.vision_encoder (or model.init_from, an SVD folder)")
        if (self.init_from is not None or self.init_from_component is not None) and self.unet:
            raise ValueError("model.unet describes a fresh UNet: leave it out with model.init_from")
        bad = sorted(set(self.settings) - set(SETTINGS_KEYS))
        if bad:
            raise ValueError(f"unknown model.settings keys {bad}; expected some of {list(SETTINGS_KEYS)}")
        return self


class I2VOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolution: int | tuple[int, int] = Field(128, description="frames are resized to this square size, or [width, height]")
    frames: int = Field(8, ge=2, description="window length (frames per training clip; at most the shards' clip_frames)")
    min_frames: int | None = Field(None, ge=2, description="cut each micro batch to a random length in [min_frames, frames]")
    first_window_prob: float = Field(0.5, ge=0, le=1, description="windows starting at the keyframe (segment 1)")
    end_frame_from_last: int = Field(3, ge=1, description="the end frame is drawn from the window's last N frames")
    end_frame_drop: float = Field(0.25, ge=0, le=1)
    noise_aug_mean: float = -3.0
    noise_aug_std: float = Field(0.5, ge=0)
    sigma_mean: float = 0.7
    sigma_std: float = Field(1.6, gt=0)
    noise_share: float = Field(0.0, ge=0, lt=1, description="diffusion noise of every frame = sqrt(r) * one draw shared by the "
                               "window's frames + sqrt(1 - r) * its own (PYoCo's mixed noise); the export samples with the same r")
    flow_weight: float = Field(1.0, ge=0, description="weight of the flow channels' v-MSE in the loss (with model.flow_channels)")
    flow_input_drop: float = Field(0.2, ge=0, le=1, description="share of samples whose noisy flow input is zeroed (the branch Inner-Guidance "
                                   "contrasts with; with model.flow_channels)")
    uncond_prob: float = Field(0.1, ge=0, le=1)
    descriptor_drop: float = Field(0.1, ge=0, le=1)
    hflip: bool = True
    fps: int | None = Field(None, ge=1, description="the fps time id (None: the shards' index.json fps)")
    gradient_checkpointing: bool = False
    export_samples: int = Field(16, ge=1, description="samples at export: the median motion bucket and a held-out loss")
    export_dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="weights as saved (16-bit: half the size; they "
                                                                 "load in the dtype generate-movie asks for, --dtype)")
    export_shard_size: str | None = Field(None, pattern=r"^[0-9]+(KB|MB|GB)$",
                                          description="split the exported UNet into diffusers shards of at most this size (e.g. 10MB; None: one file)")

    @model_validator(mode="after")
    def _lengths(self):
        if min(self.size) < 8:
            raise ValueError(f"resolution must be at least 8 pixels, found {self.resolution}")
        if self.min_frames is not None and self.min_frames > self.frames:
            raise ValueError(f"min_frames {self.min_frames} is larger than frames {self.frames}")
        return self

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return (self.resolution, self.resolution) if isinstance(self.resolution, int) else tuple(self.resolution)
