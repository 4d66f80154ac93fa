"""`moviedreamer train vae`: a diffusers `AutoencoderKL` trained on toy-world frames.

Loss: L1 + L2 reconstruction + a small KL term (the SD recipe without the GAN and LPIPS terms: the toy world is
flat colour, so pixel losses alone reach high PSNR). Frames are keyframes plus a few frames of each shot's clip,
optionally trained as random crops (the network is convolutional; crops cost a quarter of the compute at 64 px).
At export the latent scale is measured (`scaling_factor` = 1 / std of sampled latents over a few hundred frames),
so diffusion stages see latents of about unit variance, and the folder is written with `save_pretrained`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from moviedreamer.errors import UserError
from moviedreamer.train.harness import Stage


class VAEModelArgs(BaseModel):
    """AutoencoderKL architecture (diffusers names). Downsampling is 2^(len(block_out_channels) - 1)."""

    model_config = ConfigDict(extra="forbid")
    block_out_channels: list[int] = Field(default_factory=lambda: [16, 32, 64, 64], min_length=1)
    layers_per_block: int = Field(1, ge=1)
    latent_channels: int = Field(4, ge=1)
    norm_num_groups: int = Field(8, ge=1)
    mid_block_add_attention: bool = False
    sample_size: int = Field(128, ge=8)
    init_from: Path | None = Field(None, description="a diffusers AutoencoderKL folder to fine-tune instead of a fresh model")
    logvar_init: float | None = Field(-8.0, description="initial posterior log-variance of a fresh model (None: diffusers' init, about 0)")

    @model_validator(mode="after")
    def _groups_divide(self):
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad and self.init_from is None:
            raise ValueError(f"every block_out_channels entry must be divisible by norm_num_groups={self.norm_num_groups}, found {bad}")
        return self


class VAEOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolution: int = Field(128, ge=8, description="frames are resized to this square size")
    crop: int | None = Field(None, ge=8, description="train on random crops of this size (None: whole frames)")
    frames_per_shot: int = Field(4, ge=1, description="the keyframe plus frames drawn from the shot's clip")
    hflip: bool = True
    l1_weight: float = Field(1.0, ge=0)
    l2_weight: float = Field(1.0, ge=0)
    kl_weight: float = Field(1e-6, ge=0)
    scaling_factor: float | Literal["auto"] = "auto"
    scaling_frames: int = Field(256, ge=1, description="frames encoded at export to measure the latent scale")
    channels_last: bool = Field(True, description="NHWC tensors: faster convolutions on CPU (oneDNN); single process, ZeRO 0")

    @model_validator(mode="after")
    def _crop_fits(self):
        if self.crop is not None and self.crop > self.resolution:
            raise ValueError(f"crop {self.crop} is larger than resolution {self.resolution}")
        return self


class VAEStage(Stage):
    name = "vae"
    keys = ("keyframes", "clips")
    mix = 4

    def __init__(self, cfg):
        super().__init__(cfg)
        self.use_channels_last = False  # set once the engine exists (after_initialize)
        self.args, self.opts = self.parse_sections(VAEModelArgs, VAEOptions)
        if self.args.init_from is not None and not (self.args.init_from / "config.json").is_file():
            raise UserError(f"model.init_from: expected a diffusers AutoencoderKL folder (config.json + weights), found {self.args.init_from}")
        down = 2 ** (len(self.args.block_out_channels) - 1)
        size = self.opts.crop or self.opts.resolution
        if self.args.init_from is None and (size % down or self.opts.resolution % down):
            raise UserError(f"options: resolution {self.opts.resolution} and crop {self.opts.crop} must be multiples of the VAE's downsampling {down}")

    # -- model
    def build_model(self):
        return VAETrainer(self.make_vae())

    def after_initialize(self, engine, world_size: int) -> None:
        """NHWC weights after DeepSpeed's broadcast (which needs contiguous tensors); not under ZeRO, which flattens them."""
        self.use_channels_last = self.opts.channels_last and self.cfg.zero_stage == 0
        if self.use_channels_last:
            engine.module.to(memory_format=torch.channels_last)  # in place: the optimizer keeps the same parameters

    def make_vae(self):
        # diffusers is heavy: loaded only when a model is built or read
        from diffusers import AutoencoderKL

        a = self.args
        if a.init_from is not None:
            return AutoencoderKL.from_pretrained(str(a.init_from))
        n = len(a.block_out_channels)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
            block_out_channels=tuple(a.block_out_channels), layers_per_block=a.layers_per_block,
            latent_channels=a.latent_channels, norm_num_groups=a.norm_num_groups, sample_size=a.sample_size,
            mid_block_add_attention=a.mid_block_add_attention,
        )
        if a.logvar_init is not None:
            # A fresh encoder's log-variance is ~0: posterior samples carry unit noise that drowns the image and
            # slows early training several-fold. Start nearly deterministic; the KL term still shapes it.
            with torch.no_grad():
                vae.quant_conv.bias[a.latent_channels :].fill_(a.logvar_init)
        return vae

    # -- data
    def samples(self, episode: dict, rng) -> list:
        """The keyframe of every shot plus `frames_per_shot - 1` other frames of its clip (uint8 HWC tensors)."""
        out = []
        keyframes, clips = episode.get("keyframes"), episode.get("clips")
        shots = clips.shape[0] if clips is not None else keyframes.shape[0] if keyframes is not None else 0
        for s in range(shots):
            out.append(keyframes[s] if keyframes is not None else clips[s, 0])
            if clips is not None and self.opts.frames_per_shot > 1 and clips.shape[1] > 1:
                k = min(self.opts.frames_per_shot - 1, clips.shape[1] - 1)
                for t in sorted(rng.choice(range(1, clips.shape[1]), size=k, replace=False).tolist()):
                    out.append(clips[s, t])
        order = rng.permutation(len(out))
        return [out[i] for i in order]

    def to_input(self, frames, device="cpu", dtype=None):
        """uint8 [B, H, W, 3] → float [B, 3, R, R] in [-1, 1] at the training resolution."""
        x = frames.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        r = self.opts.resolution
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="area" if x.shape[-1] > r else "bilinear", align_corners=None if x.shape[-1] > r else False)
        return x.to(dtype or torch.float32)

    def collate(self, samples: list, device, dtype):
        x = self.to_input(torch.stack(samples), "cpu")
        if self.opts.hflip:
            flip = torch.rand(x.shape[0]) < 0.5
            x[flip] = x[flip].flip(-1)
        if self.opts.crop and self.opts.crop < self.opts.resolution:
            c, r = self.opts.crop, self.opts.resolution
            offs = torch.randint(0, r - c + 1, (x.shape[0], 2))
            x = torch.stack([x[i, :, oy : oy + c, ox : ox + c] for i, (oy, ox) in enumerate(offs.tolist())])
        x = x.to(device=device, dtype=dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.use_channels_last else x

    # -- loss
    def loss(self, model, batch):
        recon, kl = model(batch)
        diff = recon.float() - batch.float()
        l1, mse, kl = diff.abs().mean(), diff.pow(2).mean(), kl.float().mean()
        o = self.opts
        loss = o.l1_weight * l1 + o.l2_weight * mse + o.kl_weight * kl
        psnr = -10 * torch.log10(mse.detach() / 4 + 1e-12)  # images in [-1, 1]: peak-to-peak 2
        return loss, {"l1": l1.item(), "mse": mse.item(), "kl": kl.item(), "psnr": psnr.item()}

    # -- export
    def export(self, model, out_dir: Path, stream) -> dict:
        vae = model.vae.float().eval()
        frames = self.to_input(torch.stack(stream.take(self.opts.scaling_frames)))
        zs, mses = [], []
        for i in range(0, len(frames), 32):
            x = frames[i : i + 32]
            post = vae.encode(x).latent_dist
            zs.append(post.sample())
            mses.append((vae.decode(post.mode()).sample.clamp(-1, 1) - x).pow(2).flatten(1).mean(1) / 4)
        z = torch.cat(zs)
        mse = torch.cat(mses)
        std, mean = z.std().item(), z.mean().item()
        scale = 1.0 / std if self.opts.scaling_factor == "auto" else float(self.opts.scaling_factor)
        vae.register_to_config(scaling_factor=scale)
        vae.save_pretrained(str(out_dir), safe_serialization=True)
        return {
            "scaling_factor": scale, "latent_std": std, "latent_mean": mean, "latent_shape": list(z.shape[1:]),
            "train_psnr": (-10 * torch.log10(mse + 1e-12)).mean().item(), "scaling_frames": len(frames),
            "params": sum(p.numel() for p in vae.parameters()),
        }


class VAETrainer(torch.nn.Module):
    """forward(x) → (reconstruction, KL per sample): one module, so DeepSpeed's forward hooks (ZeRO-3) see all of it."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        post = self.vae.encode(x).latent_dist
        recon = self.vae.decode(post.sample()).sample
        return recon, post.kl()


STAGE = VAEStage
