"""`moviedreamer train edit`: the instruction editor restyle samples with (moviedreamer/edit/, issue #39).

Data. Every pair is rendered on the fly (edit/pairs.py): a random toy-world shot at a random frame, rendered before
and after one change (its scene, the clothes colour or the hat of the characters the change names), with a templated
instruction (edit/instructions.py). The target is exact, unlike InstructPix2Pix's generated pairs. As in the clip
stage, the shard folder of `data:` only paces the stream (`keys = ()`: nothing is read from it), so resume is exact
and no two epochs see the same pairs.

Model. InstructPix2Pix: a UNet2DConditionModel on [noisy target latent ; source latent] (2C channels in, the source
latent unscaled, the target scaled, as diffusers' pipeline has them), cross-attending to the instruction's first
`text_tokens` per-token states from the frozen text encoder (the toy CLIP's text tower); the VAE is frozen too.
Loss: MSE of the noise (or v) prediction at a uniform DDPM timestep on Stable Diffusion's schedule.

Conditioning dropout (InstructPix2Pix, for its two guidance scales): with `text_drop` the instruction is replaced by
the empty text's states, with `image_drop` the source latent by zeros, with `both_drop` both.

Equivariant fine-tuning (Fairy): with `equivariant`, a share `equivariant_prob` of the pairs has the same random
affine transform (rotation, scale, shift) applied to source and target before encoding, so the edit commutes with
the camera's moves and follows a panning or zooming shot instead of sticking to the frame.

Export: the editor folder (edit/model.py: unet/ in `export_dtype`, scheduler/, edit_settings.json naming the VAE and
text encoder relative to the export, so the toy editor ships beside the toy VAE and CLIP without copies).
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from moviedreamer.edit.model import (
    DescriptorWords,
    EditSettings,
    InstructionEditor,
    default_scheduler_config,
    unet_eps,
)
from moviedreamer.edit.pairs import random_pair
from moviedreamer.encoders.longclip import load_descriptor_encoder
from moviedreamer.errors import UserError
from moviedreamer.train.harness import Stage
from moviedreamer.vae import load_vae
from moviedreamer.video.conditioning import encode_latents

TOY_UNET = dict(sample_size=32, out_channels=4, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], block_out_channels=[32, 48, 48], layers_per_block=1,
                cross_attention_dim=128, attention_head_dim=2, norm_num_groups=8)


class EditModelArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unet: dict = Field(default_factory=lambda: dict(TOY_UNET), description="UNet2DConditionModel arguments of a fresh editor (in_channels = 2 x out_channels)")
    init_from: Path | None = Field(None, description="an editor folder or an InstructPix2Pix diffusers folder to fine-tune")
    vae: Path | None = Field(None, description="the frozen diffusers AutoencoderKL folder (default with init_from: the folder's own)")
    text_encoder: Path | None = Field(None, description="the frozen text encoder (an open_clip folder, LongCLIP .pt or HF CLIP text folder)")
    text_format: str | None = None
    text_tokens: int | None = Field(None, ge=1, description="per-token text states the UNet attends to (None: 16, or init_from's own)")
    settings: dict = Field(default_factory=dict, description="sampling defaults saved with the editor (edit/model.py EditSettings)")


class EditOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolution: int = Field(128, ge=16, description="pairs are rendered at this square size")
    samples_per_episode: int = Field(16, ge=1, description="pairs rendered per stream episode (the episode is only a seed)")
    composed: float = Field(0.5, ge=0, le=1, description="share of shots casting random compositional characters (the rest: the catalogue)")
    change_weights: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0], min_length=3, max_length=3,
                                        description="how often each change is drawn: scene, clothes colour, hat")
    hflip: bool = True
    equivariant: bool = Field(False, description="Fairy's equivariant fine-tuning: one random affine transform on source and target")
    equivariant_prob: float = Field(0.5, ge=0, le=1)
    affine_degrees: float = Field(10.0, ge=0)
    affine_scale: tuple[float, float] = (0.85, 1.15)
    affine_shift: float = Field(0.1, ge=0, description="largest shift, as a share of the frame")
    text_drop: float = Field(0.05, ge=0, le=1)
    image_drop: float = Field(0.05, ge=0, le=1)
    both_drop: float = Field(0.05, ge=0, le=1)
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    lr: float | None = Field(None, gt=0, description="this stage's learning rate (None: the DeepSpeed JSON's)")
    eval_pairs: int = Field(64, ge=0, description="held-out pairs for the export's loss figure")
    export_dtype: Literal["float16", "float32"] = "float16"


class EditStage(Stage):
    name = "edit"
    keys = ()  # the shard episode is only a seed: nothing is read from it
    mix = 2

    def __init__(self, cfg):
        super().__init__(cfg)
        self.args, self.opts = self.parse_sections(EditModelArgs, EditOptions)
        a, o = self.args, self.opts
        if o.text_drop + o.image_drop + o.both_drop > 1:
            raise UserError("options: text_drop + image_drop + both_drop must be at most 1")
        for key in ("init_from", "vae", "text_encoder"):
            path = getattr(a, key)
            if path is not None and not Path(path).expanduser().exists():
                raise UserError(f"model.{key}: expected a folder or file, found no such path: {path}")
        if a.init_from is None and (a.vae is None or a.text_encoder is None):
            raise UserError("model: a fresh editor needs model.vae and model.text_encoder (or model.init_from)")
        if a.init_from is None:
            from diffusers import UNet2DConditionModel

            known = set(inspect.signature(UNet2DConditionModel.__init__).parameters) - {"self"}
            bad = sorted(set(a.unet) - known)
            if bad:
                raise UserError(f"{cfg.source or 'stage config'}: model.unet: unknown UNet2DConditionModel arguments {bad}")
        if a.init_from is not None and a.text_encoder is None and a.text_tokens is not None:
            raise UserError("model.text_tokens: an init_from folder's text encoder reads as many tokens as it was trained with; "
                            "leave text_tokens out (or give model.text_encoder too)")
        self.settings = self._settings({})  # checked now, before anything loads
        self.device = torch.device("cpu")

    def _settings(self, base: dict) -> EditSettings:
        """The editor's settings: init_from's (`base`), then model.settings, then this run's resolution and text tokens."""
        a = self.args
        tokens = a.text_tokens or base.get("text_tokens", 16)
        try:
            return EditSettings.from_dict({**base, **a.settings, "resolution": self.opts.resolution, "text_tokens": tokens}, "model.settings")
        except UserError as e:
            raise UserError(f"{self.cfg.source or 'stage config'}: {e}") from None

    # -- frozen parts
    @cached_property
    def base(self) -> InstructionEditor | None:
        return InstructionEditor.from_pretrained(self.args.init_from) if self.args.init_from is not None else None

    @cached_property
    def vae_path(self) -> Path:
        return Path(self.args.vae).expanduser().resolve() if self.args.vae else self.base.path(self.base.settings.vae).resolve()

    @cached_property
    def vae(self):
        return load_vae(self.vae_path, temporal=False)

    @cached_property
    def text(self):
        if self.args.text_encoder is None:
            return self.base.load_text()
        return DescriptorWords(load_descriptor_encoder(self.args.text_encoder, self.args.text_format), self.args.text_tokens or 16)

    @cached_property
    def null_text(self) -> torch.Tensor:
        return self.text([""])

    @cached_property
    def noise_scheduler(self):
        from diffusers import DDPMScheduler

        config = dict(self.base.scheduler_config) if self.base is not None else default_scheduler_config()
        config["prediction_type"] = self.opts.prediction_type
        return DDPMScheduler.from_config(config)

    # -- model
    def build_model(self):
        if self.base is not None:
            unet = InstructionEditor.from_pretrained(self.args.init_from).unet.train().requires_grad_(True)
        else:
            unet = InstructionEditor.build(self.args.unet, self.settings).unet
        if unet.config.cross_attention_dim != self.null_text.shape[-1]:
            raise UserError(f"model.unet: cross_attention_dim {unet.config.cross_attention_dim} does not match the text encoder's "
                            f"width {self.null_text.shape[-1]}")
        if unet.config.out_channels != self.vae.config.latent_channels:
            raise UserError(f"model.unet: out_channels {unet.config.out_channels} must be the VAE's latent channels ({self.vae.config.latent_channels})")
        return EditTrainer(unet)

    def trainable_parameters(self, model):
        params = [p for p in model.parameters() if p.requires_grad]
        return params if self.opts.lr is None else [{"params": params, "lr": self.opts.lr}]

    def after_initialize(self, engine, world_size: int) -> None:
        self.device = engine.device
        self.vae.to(self.device)

    # -- data
    def samples(self, episode: dict, rng) -> list:
        o = self.opts
        out = []
        for _ in range(o.samples_per_episode):
            pair = random_pair(rng, o.resolution, o.composed, o.change_weights)
            out.append({"source": torch.from_numpy(pair.source), "target": torch.from_numpy(pair.target), "instruction": pair.instruction})
        return out

    @torch.no_grad()
    def collate(self, samples: list, device, dtype):
        o, b = self.opts, len(samples)
        px = torch.stack([torch.stack([s["source"], s["target"]]) for s in samples]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
        if o.hflip:  # no instruction says left or right: a flipped pair is as true
            flip = torch.rand(b) < 0.5
            px[flip] = px[flip].flip(-1)
        if o.equivariant:
            px = same_affine(px, self.affine_thetas(b))
        z = encode_latents(self.vae, px.flatten(0, 1).to(self.device)).float()
        z = z.view(b, 2, *z.shape[1:])
        source, target = z[:, 0] / self.vae.config.scaling_factor, z[:, 1]
        text = self.text([s["instruction"] for s in samples]).to(self.device)
        r = torch.rand(b)
        drop_text = (r < o.text_drop) | ((r >= o.text_drop + o.image_drop) & (r < o.text_drop + o.image_drop + o.both_drop))
        drop_image = (r >= o.text_drop) & (r < o.text_drop + o.image_drop + o.both_drop)
        text[drop_text.to(self.device)] = self.null_text.to(text)
        source[drop_image.to(self.device)] = 0
        noise = torch.randn(target.shape).to(self.device)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,)).to(self.device)
        noisy = self.noise_scheduler.add_noise(target, noise, t)
        goal = noise if o.prediction_type == "epsilon" else self.noise_scheduler.get_velocity(target, noise, t)
        to = dict(device=device, dtype=dtype)
        return {"noisy": noisy.to(**to), "source": source.to(**to), "t": t.to(device), "text": text.to(**to), "goal": goal.to(device),
                "dropped_text": drop_text.float().mean().item(), "dropped_image": drop_image.float().mean().item()}

    def affine_thetas(self, b: int) -> torch.Tensor:
        """[b, 2, 3] affine_grid matrices: identity for 1 - equivariant_prob of the pairs, a random similarity otherwise."""
        o = self.opts
        angle = (torch.rand(b) * 2 - 1) * math.radians(o.affine_degrees)
        scale = o.affine_scale[0] + torch.rand(b) * (o.affine_scale[1] - o.affine_scale[0])
        shift = (torch.rand(b, 2) * 2 - 1) * o.affine_shift * 2  # affine_grid's frame is 2 wide
        keep = torch.rand(b) >= o.equivariant_prob
        angle[keep], scale[keep], shift[keep] = 0.0, 1.0, 0.0
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)

    # -- loss
    def loss(self, model, batch):
        pred = model(batch["noisy"], batch["t"], batch["source"], batch["text"])
        loss = F.mse_loss(pred.float(), batch["goal"].float())
        return loss, {"dropped_text": batch["dropped_text"], "dropped_image": batch["dropped_image"]}

    # -- export
    def export(self, model, out_dir: Path, stream) -> dict:
        unet = model.unet.float().eval()
        losses = []
        if self.opts.eval_pairs:
            torch.manual_seed(self.cfg.seed + 7)
            rng = np.random.default_rng([0x5EED, self.cfg.seed])
            held = [random_pair(rng, self.opts.resolution, self.opts.composed, self.opts.change_weights) for _ in range(self.opts.eval_pairs)]
            samples = [{"source": torch.from_numpy(p.source), "target": torch.from_numpy(p.target), "instruction": p.instruction} for p in held]
            for i in range(0, len(samples), 16):
                batch = self.collate(samples[i : i + 16], self.device, torch.float32)
                losses.append(self.loss(model.to(self.device), batch)[0].item())
        out_dir = Path(out_dir)
        settings = self._settings(asdict(self.base.settings) if self.base is not None else {})
        settings.vae = os.path.relpath(self.vae_path, out_dir.resolve())
        if self.args.text_encoder is not None:
            settings.text_encoder = os.path.relpath(Path(self.args.text_encoder).expanduser().resolve(), out_dir.resolve())
            settings.text_format = self.args.text_format
        else:
            settings.text_encoder = os.path.relpath(self.base.path(self.base.settings.text_encoder).resolve(), out_dir.resolve())
            settings.text_format = self.base.settings.text_format
        config = {**(self.base.scheduler_config if self.base is not None else default_scheduler_config()), "prediction_type": self.opts.prediction_type}
        editor = InstructionEditor(unet.cpu(), config, settings)
        editor.save_pretrained(out_dir, getattr(torch, self.opts.export_dtype))
        size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
        return {"params": sum(p.numel() for p in unet.parameters()), "bytes": size, "dtype": self.opts.export_dtype,
                "heldout_loss": float(np.mean(losses)) if losses else None, "eval_pairs": self.opts.eval_pairs}


def same_affine(px: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """px [B, 2, 3, H, W] (source, target) -> both frames of pair i moved by theta[i] (edges extended)."""
    b, two = px.shape[:2]
    grid = F.affine_grid(theta.repeat_interleave(two, 0), [b * two, *px.shape[2:]], align_corners=False)
    return F.grid_sample(px.flatten(0, 1), grid, mode="bilinear", padding_mode="border", align_corners=False).view_as(px)


class EditTrainer(torch.nn.Module):
    """forward(noisy, t, source, text) -> the UNet's prediction on [noisy ; source]: one module for DeepSpeed."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, noisy, t, source, text):
        return unet_eps(self.unet, noisy, source, t, text)


STAGE = EditStage
