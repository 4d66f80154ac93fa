"""The anchored image-to-video model: a diffusers `UNetSpatioTemporalConditionModel` (SVD's UNet) plus the small
projections that turn the anchor's CLIP image embedding and the shot's descriptor embedding into its
cross-attention tokens, with its scheduler and sampling defaults.

Folder layout (`save_pretrained` / `from_pretrained`; the root is an ordinary diffusers model folder, so the
registry's `diffusers` format check and `UNetSpatioTemporalConditionModel.from_pretrained(folder)` both work):

    i2v/
      config.json + diffusion_pytorch_model.safetensors   the UNet (SVD layout: in_channels = 2 x latent channels, + flow channels: motion.py);
                                                          or diffusers' sharded form (*.safetensors.index.json + shards: the toy's)
      conditioning/config.json + diffusion_pytorch_model.safetensors   I2VConditioning (projections)
      scheduler/scheduler_config.json                     EulerDiscreteScheduler (EDM sigmas, v-prediction)
      moviedreamer_i2v.json                               I2VSettings: segment length, overlap, steps, tau, ...
      vae/  (optional)                                    the VAE it was trained with, when not the profile's

Conventions (SVD's): the UNet denoises latents in the VAE's *scaled* space (z * scaling_factor); the concatenated
conditioning latents are *unscaled* (z, as `vae.encode(x).latent_dist.mode()` gives them), plus noise
augmentation of strength `noise_aug` (added in latent space here, so that a generated latent can condition the next
segment without a decode -> encode round trip). Preconditioning is EDM with sigma_data = 1 and v-prediction, exactly
what `EulerDiscreteScheduler(prediction_type="v_prediction", timestep_type="continuous")` undoes at sampling time.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from moviedreamer.errors import CheckpointError, UserError
from moviedreamer.vae import load_diffusers as _load
from moviedreamer.vae import read_json as _read_json
from moviedreamer.video.motion import grow_anchor_channels, grow_flow_channels
from moviedreamer.video.motion_field import FOLDER as MOTION_FIELD_DIR
from moviedreamer.video.motion_field import MotionField
from moviedreamer.video.motion_prior import MotionPrior
from moviedreamer.video.settings import I2VSettings
from moviedreamer.video.temporal_conv import temporal_convs_as_2d

SETTINGS_FILE = "moviedreamer_i2v.json"
CONDITIONING_DIR = "conditioning"
SCHEDULER_DIR = "scheduler"

# SVD-XT's scheduler, with the toy's sigma range (few steps want a short range).
TOY_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="v_prediction",
    interpolation_type="linear", use_karras_sigmas=True, sigma_min=0.02, sigma_max=80.0, timestep_spacing="leading",
    timestep_type="continuous", steps_offset=1,
)


class I2VConditioning(ModelMixin, ConfigMixin):
    """Anchor CLIP image embedding (+ shot descriptor embedding) -> cross-attention tokens [B, N, cross_attention_dim].

    descriptor_mode "token": tokens = [anchor, descriptor] (N = 2); "add": one token, anchor + descriptor (the
    descriptor projection starts at zero, so a model loaded from SVD behaves exactly like SVD before fine-tuning).
    `descriptor_words` K > 0 (token mode) appends the descriptor's first K per-word states through `word_proj`
    (N = 2 + K): the descriptor then comes as [B, 1 + K, Dd], row 0 the pooled embedding (a [B, Dd] one has no words)."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, image_embed_dim: int = 1024, cross_attention_dim: int = 1024, descriptor_dim: int = 0,
                 project_image: bool = True, descriptor_mode: str = "token", descriptor_words: int = 0):
        super().__init__()
        if descriptor_mode not in ("token", "add"):
            raise UserError(f"i2v conditioning: descriptor_mode must be 'token' or 'add', found {descriptor_mode!r}")
        if descriptor_words < 0 or (descriptor_words and (descriptor_mode != "token" or not descriptor_dim)):
            raise UserError(f"i2v conditioning: descriptor_words needs descriptor_mode 'token' and a descriptor encoder, found "
                            f"{descriptor_words} words, mode {descriptor_mode!r}, descriptor width {descriptor_dim}")
        if not project_image and image_embed_dim != cross_attention_dim:
            raise UserError(f"i2v conditioning: project_image=false needs image_embed_dim == cross_attention_dim, found {image_embed_dim} and {cross_attention_dim}")
        self.image_proj = nn.Linear(image_embed_dim, cross_attention_dim) if project_image else nn.Identity()
        self.descriptor_proj = nn.Linear(descriptor_dim, cross_attention_dim) if descriptor_dim else None
        if self.descriptor_proj is not None:
            nn.init.zeros_(self.descriptor_proj.weight)
            nn.init.zeros_(self.descriptor_proj.bias)
        self.word_proj = nn.Linear(descriptor_dim, cross_attention_dim) if descriptor_words else None
        if self.word_proj is not None:
            nn.init.zeros_(self.word_proj.weight)
            nn.init.zeros_(self.word_proj.bias)

    @property
    def num_tokens(self) -> int:
        return (2 + self.config.descriptor_words) if self.descriptor_proj is not None and self.config.descriptor_mode == "token" else 1

    @property
    def descriptor_words(self) -> int:
        return int(self.config.get("descriptor_words", 0) or 0)

    def forward(self, image_embeds: torch.Tensor, descriptor: torch.Tensor | None = None, uncond: torch.Tensor | None = None) -> torch.Tensor:
        """image_embeds [B, Di], descriptor [B, Dd] or None -> tokens [B, N, D]. An all-zero descriptor row means
        "no descriptor" (a zero token, as when None); `uncond` [B] bool zeroes all tokens of a row: the
        classifier-free-guidance null condition, the same zeros the sampler's unconditional branch uses."""
        anchor = self.image_proj(image_embeds)
        if self.descriptor_proj is None:
            tokens = anchor[:, None]
        else:
            k = self.descriptor_words
            words = None
            if descriptor is None:
                desc = torch.zeros_like(anchor)
            else:
                if descriptor.shape[-1] != self.config.descriptor_dim:
                    raise UserError(f"i2v: descriptor embedding of width {descriptor.shape[-1]}, the model expects {self.config.descriptor_dim}")
                descriptor = descriptor.to(anchor.dtype)
                if descriptor.dim() == 3:  # [B, 1 + K, Dd]: the pooled embedding, then the words
                    if k and descriptor.shape[1] != 1 + k:
                        raise UserError(f"i2v: descriptor with {descriptor.shape[1] - 1} word states, the model expects {k}")
                    descriptor, words = descriptor[:, 0], descriptor[:, 1:]
                present = (descriptor.abs().sum(-1, keepdim=True) > 0).to(anchor.dtype)
                desc = self.descriptor_proj(descriptor) * present
                if k and words is not None:
                    words = self.word_proj(words) * present[:, None]
            tokens = (anchor + desc)[:, None] if self.config.descriptor_mode == "add" else torch.stack([anchor, desc], dim=1)
            if k:  # no words given (or no descriptor): zero tokens, like a missing descriptor
                tokens = torch.cat([tokens, words if words is not None else tokens.new_zeros(tokens.shape[0], k, tokens.shape[-1])], dim=1)
        if uncond is not None:
            tokens = tokens * (~uncond.bool()).to(tokens.dtype).view(-1, 1, 1)
        return tokens


class AnchoredI2V(nn.Module):
    """UNet + conditioning projections + scheduler config + settings: the whole I2V component."""

    def __init__(self, unet, conditioning: I2VConditioning, settings: I2VSettings | None = None, scheduler_config: dict | None = None):
        super().__init__()
        self.unet, self.conditioning = unet, conditioning
        temporal_convs_as_2d(unet)  # the same convolutions through oneDNN's 2-D kernels (video/temporal_conv.py)
        self.settings = settings or I2VSettings(latent_channels=unet.config.out_channels)
        self.scheduler_config = dict(scheduler_config or TOY_SCHEDULER)
        self.motion_prior = None  # a video.motion_prior.MotionPrior (motion_prior.safetensors in the folder), if fitted
        self.motion_field = None  # a video.motion_field.MotionField (motion_field/ in the folder), if trained
        m = self.settings.flow_channels
        c = unet.config.out_channels - m
        if unet.config.in_channels != c + m + c * (2 if self.settings.anchor_latent else 1):
            raise UserError(f"i2v: the UNet must take noisy latents ({c}) + {m} flow channels + conditioning latents ({c})"
                            + (f" + anchor latents ({c})" if self.settings.anchor_latent else "")
                            + f", found in_channels={unet.config.in_channels}, out_channels={unet.config.out_channels}")
        cross = unet.config.cross_attention_dim
        cross = cross[0] if isinstance(cross, (list, tuple)) else cross
        if conditioning.config.cross_attention_dim != cross:
            raise UserError(f"i2v: conditioning gives tokens of width {conditioning.config.cross_attention_dim}, the UNet attends to {cross}")

    # ------------------------------------------------------------------------------------------------ build

    @classmethod
    def build(cls, unet_config: dict, image_embed_dim: int, descriptor_dim: int = 0, descriptor_mode: str = "token",
              settings: I2VSettings | None = None, scheduler_config: dict | None = None, descriptor_words: int = 0) -> "AnchoredI2V":
        # diffusers is heavy: loaded only when a model is built or read
        from diffusers import UNetSpatioTemporalConditionModel

        unet = UNetSpatioTemporalConditionModel(**unet_config)
        cross = unet.config.cross_attention_dim
        cross = cross[0] if isinstance(cross, (list, tuple)) else cross
        cond = I2VConditioning(image_embed_dim, cross, descriptor_dim, True, descriptor_mode, descriptor_words)
        settings = settings or I2VSettings()
        settings.latent_channels = unet.config.out_channels - settings.flow_channels
        return cls(unet, cond, settings, scheduler_config)

    @classmethod
    def from_svd(cls, path: str | Path, descriptor_dim: int = 0, descriptor_mode: str = "add",
                 settings: I2VSettings | None = None, dtype: torch.dtype | None = None) -> "AnchoredI2V":
        """Start from an SVD / SVD-XT diffusers pipeline folder (model_index.json, unet/, vae/, image_encoder/,
        scheduler/): its UNet and scheduler as they are; the anchor projection is the identity (SVD attends to the
        CLIP image embedding directly); the descriptor projection starts at zero. With no descriptor this is stock SVD:
        anchored on the keyframe through its image embedding and nothing else. `dtype`: the weights once loaded."""
        # diffusers is heavy: loaded only when a model is built or read
        from diffusers import UNetSpatioTemporalConditionModel

        path = require_svd_folder(path)
        unet = _load(UNetSpatioTemporalConditionModel, path / "unet", "the SVD UNet (unet/)", dtype)
        cross = unet.config.cross_attention_dim
        cross = cross[0] if isinstance(cross, (list, tuple)) else cross
        image_dim = _read_json(path / "image_encoder" / "config.json").get("projection_dim", cross)
        cond = I2VConditioning(image_dim, cross, descriptor_dim, image_dim != cross, descriptor_mode)
        sched = {k: v for k, v in _read_json(path / "scheduler" / "scheduler_config.json").items() if not k.startswith("_")}
        settings = settings or I2VSettings(num_frames=unet.config.num_frames, overlap=3, steps=25, tau=12, guidance_min=1.0,
                                           guidance_max=3.0, fps=7, motion_bucket=127.0, noise_aug=0.02, decode_chunk=8)
        settings.latent_channels = unet.config.out_channels
        vae_cfg = _read_json(path / "vae" / "config.json")
        settings.vae_scaling_factor = float(vae_cfg.get("scaling_factor", 0.18215))
        settings.image_encoder = {"path": str((path / "image_encoder").resolve()), "format": "hf-clip-vision"}
        return cls(unet, cond.to(unet.dtype), settings, sched)

    # ------------------------------------------------------------------------------------------------ io

    def save_pretrained(self, out_dir: str | Path, max_shard_size: str | None = None) -> Path:
        """`max_shard_size` (e.g. "10MB"): the UNet in diffusers' sharded form (an index + shards), which
        `from_pretrained` reads as well; None: one file."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("diffusion_pytorch_model*.safetensors*"):  # a previous export in the other form
            old.unlink()
        kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
        self.unet.save_pretrained(str(out_dir), safe_serialization=True, **kw)
        self.conditioning.save_pretrained(str(out_dir / CONDITIONING_DIR), safe_serialization=True)
        self.make_scheduler().save_pretrained(str(out_dir / SCHEDULER_DIR))
        (out_dir / SETTINGS_FILE).write_text(json.dumps(asdict(self.settings), indent=2) + "\n")
        if self.motion_prior is not None:
            self.motion_prior.save(out_dir)
        if self.motion_field is not None:
            self.motion_field.save(out_dir / MOTION_FIELD_DIR)
        return out_dir

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = torch.float32) -> "AnchoredI2V":
        """`dtype`: the weights' dtype once loaded (float16 files, as the toy profile ships them, load as float32)."""
        # diffusers is heavy: loaded only when a model is built or read
        from diffusers import UNetSpatioTemporalConditionModel

        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: expected an i2v folder (config.json + diffusion_pytorch_model.safetensors, conditioning/, "
                                  f"scheduler/, {SETTINGS_FILE}; made by `moviedreamer train i2v`), found "
                                  + ("a file" if path.exists() else "no such folder"))
        for need in ("config.json", f"{CONDITIONING_DIR}/config.json", f"{SCHEDULER_DIR}/scheduler_config.json", SETTINGS_FILE):
            if not (path / need).is_file():
                raise CheckpointError(f"{path / need}: expected this file of an i2v folder (made by `moviedreamer train i2v`), found no such file")
        unet = _load_unet_int8(path, dtype) if (path / INT8_WEIGHTS).is_file() else _load(UNetSpatioTemporalConditionModel, path, "the i2v UNet", dtype)
        if any((path / CONDITIONING_DIR).glob("diffusion_pytorch_model*")):
            cond = _load(I2VConditioning, path / CONDITIONING_DIR, "the i2v conditioning projections", dtype)
        else:  # stock SVD's conditioning has no weights (the image embedding is attended as it is): its config says it all
            cond = I2VConditioning.from_config(I2VConditioning.load_config(str(path / CONDITIONING_DIR)))
            if any(True for _ in cond.parameters()):
                raise CheckpointError(f"{path / CONDITIONING_DIR}: expected the weights of the i2v conditioning projections, found none")
        settings = I2VSettings.from_dict(_read_json(path / SETTINGS_FILE)).check()
        sched = {k: v for k, v in _read_json(path / SCHEDULER_DIR / "scheduler_config.json").items() if not k.startswith("_")}
        model = cls(unet.eval(), cond.eval(), settings, sched)
        model.motion_prior = MotionPrior.load(path)
        if (path / MOTION_FIELD_DIR).is_dir():
            model.motion_field = MotionField.load(path / MOTION_FIELD_DIR)
            if model.motion_field.config.frames < settings.num_frames:
                raise CheckpointError(f"{path / MOTION_FIELD_DIR}: a motion field of {model.motion_field.config.frames}-frame segments; the model "
                                      f"samples {settings.num_frames}: train it with the model's segment length")
        return model

    # ------------------------------------------------------------------------------------------------ use

    def make_scheduler(self):
        # diffusers is heavy: loaded only when a model is built or read
        from diffusers import EulerDiscreteScheduler

        return EulerDiscreteScheduler.from_config(self.scheduler_config)

    @property
    def latent_channels(self) -> int:
        """The VAE latent (appearance) channels; the UNet's outputs after them are flow channels (video/motion.py)."""
        return self.unet.config.out_channels - self.settings.flow_channels

    def add_flow_channels(self, flow_channels: int) -> "AnchoredI2V":
        """Make an appearance-only model a joint appearance-motion one (VideoJAM); what it draws is unchanged."""
        grow_flow_channels(self.unet, self.latent_channels, flow_channels, self.settings.anchor_latent)
        self.settings.flow_channels = int(flow_channels)
        return self

    def add_anchor_latent(self) -> "AnchoredI2V":
        """Let the UNet see the keyframe's latents on every frame too (zero weights: what it draws is unchanged)."""
        if not self.settings.anchor_latent:
            grow_anchor_channels(self.unet, self.latent_channels)
            self.settings.anchor_latent = True
        return self

    def add_descriptor_words(self, words: int) -> "AnchoredI2V":
        """Attend to the descriptor's first `words` per-word states too (a fresh, zero-initialised `word_proj`)."""
        old = self.conditioning
        cfg = {k: v for k, v in old.config.items() if not k.startswith("_")}
        new = I2VConditioning(**{**cfg, "descriptor_words": int(words)}).to(old.image_proj.weight.dtype)
        new.load_state_dict(old.state_dict(), strict=False)
        self.conditioning = new
        return self

    def tokens(self, image_embeds: torch.Tensor, descriptor: torch.Tensor | None = None, uncond: torch.Tensor | None = None) -> torch.Tensor:
        return self.conditioning(image_embeds.to(self.dtype), None if descriptor is None else descriptor.to(self.dtype), uncond)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def unet_forward(self, model_input: torch.Tensor, cond: torch.Tensor, timestep, tokens: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
        """model_input: scaled noisy latents [B, F, C (+ flow channels), h, w] (already divided by sqrt(sigma^2 + 1));
        cond: the conditioning latents [B, F, C (+ C anchor latents), h, w]; returns the UNet's v-prediction [B, F, C (+ flow), h, w]."""
        return self.unet(torch.cat([model_input, cond], dim=2), timestep, encoder_hidden_states=tokens,
                         added_time_ids=time_ids, return_dict=False)[0]

    def predict_v(self, noisy: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, tokens: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
        """The UNet's v-prediction for noisy = z + sigma * eps (sigma [B]), with EDM's input scaling and noise
        conditioning c_noise = ln(sigma) / 4: what `EulerDiscreteScheduler` feeds it at sampling time."""
        s = sigma.to(noisy.dtype).view(-1, 1, 1, 1, 1)
        return self.unet_forward(noisy / (s**2 + 1).sqrt(), cond, 0.25 * sigma.log().to(noisy.dtype), tokens, time_ids)

    def denoise(self, noisy: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, tokens: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
        """D(x; sigma) = c_skip x + c_out v, with c_skip = 1 / (sigma^2 + 1), c_out = -sigma / sqrt(sigma^2 + 1)."""
        s = sigma.to(noisy.dtype).view(-1, 1, 1, 1, 1)
        v = self.predict_v(noisy, sigma, cond, tokens, time_ids)
        return noisy / (s**2 + 1) - s / (s**2 + 1).sqrt() * v

    def forward(self, noisy, sigma, cond, image_embeds, descriptor, time_ids, uncond=None):
        """Training: the v-prediction (compare with `v_target`; EDM's weighted denoising loss is exactly that MSE)."""
        return self.predict_v(noisy, sigma, cond, self.tokens(image_embeds, descriptor, uncond), time_ids)


def v_target(clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The v the UNet should predict for noisy = clean + sigma * noise: (noise - sigma * clean) / sqrt(sigma^2 + 1).
    MSE on it equals EDM's (sigma^2 + 1) / sigma^2-weighted denoising loss (sigma_data = 1)."""
    s = sigma.to(clean.dtype).view(-1, 1, 1, 1, 1)
    return (noise - s * clean) / (s**2 + 1).sqrt()


def time_ids(fps: float, motion_bucket: float | torch.Tensor, noise_aug: float | torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """SVD's added time ids [B, 3]: [fps - 1, motion bucket, noise augmentation strength]; each a number or a [B] tensor."""
    parts = [torch.as_tensor(float(fps) - 1.0), torch.as_tensor(motion_bucket), torch.as_tensor(noise_aug)]
    parts = [p.float().cpu().reshape(-1) for p in parts]
    b = batch or max(len(p) for p in parts)
    if any(len(p) not in (1, b) for p in parts):
        raise ValueError(f"time_ids: expected numbers or [{b}] tensors, found lengths {[len(p) for p in parts]}")
    return torch.stack([p.expand(b) for p in parts], dim=1)


# ---------------------------------------------------------------------------------------------------- helpers


def require_svd_folder(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected a Stable Video Diffusion (XT) diffusers folder (model_index.json, unet/, vae/, "
                              f"image_encoder/, scheduler/), found " + ("a file" if path.exists() else "no such folder"))
    for sub, what in (("model_index.json", "the pipeline index"), ("unet/config.json", "the UNetSpatioTemporalConditionModel"),
                      ("vae/config.json", "the AutoencoderKLTemporalDecoder"), ("image_encoder/config.json", "the CLIPVisionModelWithProjection"),
                      ("scheduler/scheduler_config.json", "the EulerDiscreteScheduler")):
        if not (path / sub).is_file():
            raise CheckpointError(f"{path / sub}: expected {what} of an SVD diffusers folder, found no such file")
    return path


def vae_downsampling(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


INT8_WEIGHTS = "diffusion_pytorch_model.int8.safetensors"  # the UNet's large tensors in int8 (store_unet_int8)


def _load_unet_int8(path: Path, dtype: torch.dtype | None):
    """The i2v UNet from its config and its int8 weights, dequantised (toyworld/judge_weights.py's format)."""
    from diffusers import UNetSpatioTemporalConditionModel

    from moviedreamer.safeio import load_safetensors
    from moviedreamer.toyworld.judge_weights import dequantise

    unet = UNetSpatioTemporalConditionModel.from_config(UNetSpatioTemporalConditionModel.load_config(str(path)))
    try:
        unet.load_state_dict(dequantise(load_safetensors(path / INT8_WEIGHTS)), strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path / INT8_WEIGHTS}: the weights do not fit config.json ({str(e).splitlines()[0]})") from None
    return unet.to(dtype or torch.float32)


def store_unet_int8(folder: str | Path) -> Path:
    """Rewrite an i2v folder's UNet weights with its large tensors in int8, one float16 scale per output channel (the
    toy profile's 50 MB budget; measured against float16 with `bench/bench_referee.py --i2v FOLDER` on the same shots)."""
    from diffusers import UNetSpatioTemporalConditionModel

    from moviedreamer.safeio import save_safetensors
    from moviedreamer.toyworld.judge_weights import quantise_int8

    folder = Path(folder)
    unet = _load(UNetSpatioTemporalConditionModel, folder, "the i2v UNet", torch.float32)
    save_safetensors(quantise_int8(unet.state_dict()), folder / INT8_WEIGHTS)
    for old in folder.glob("diffusion_pytorch_model*.safetensors*"):
        if old.name != INT8_WEIGHTS:
            old.unlink()
    return folder / INT8_WEIGHTS
