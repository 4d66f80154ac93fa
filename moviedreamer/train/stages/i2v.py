"""`moviedreamer train i2v`: the anchored image-to-video model (moviedreamer/video/) on clips.

Samples. One window of `frames` consecutive frames per shot: with probability `first_window_prob` it starts at
the keyframe (segment 1), otherwise anywhere in the clip (segment n of a long shot). The concatenated latent is the
window's FIRST frame; cross-attention is ALWAYS on the shot's keyframe's CLIP embedding (+ the shot's
"{action}. {camera}" descriptor, written with the phrases of the episode's script as the pipeline writes it, and
with `model.descriptor_words` its per-word states too; video/conditioning.py) - exactly the situation of anchored
extension at inference. With `min_frames`,
each micro batch is cut to a random length in [min_frames, frames] (the last segment of a shot is shorter).

Last-frame instruction (PixelDance): the end frame is drawn from the window's last 3 frames, noise-augmented like
the conditioning frame, and placed at the last position of the concatenated latents; dropped with p = 0.25 (the
position then holds the conditioning frame, as at inference without one).

Time ids: [fps - 1, motion bucket, noise augmentation]; the motion bucket comes from the shards' exact optical flow
(motion_scale * mean |flow| / width). Noise augmentation of the conditioning latents: sigma_aug ~ lognormal
(SVD: ln sigma_aug ~ N(-3, 0.5)). Diffusion: EDM, ln sigma ~ N(sigma_mean, sigma_std), v-prediction loss; with
`noise_share` r the frames' noise is correlated (PYoCo's mixed noise prior), and the export samples with the same r.
Classifier-free guidance: with p = `uncond_prob` a sample's tokens and concatenated latents are zeroed.

The VAE, the vision encoder and the descriptor encoder are frozen and live outside the DeepSpeed engine; only the
UNet and the conditioning projections train. `model.init_from` starts from an SVD(-XT) diffusers folder (its VAE
and image encoder then are the defaults) or continues an i2v folder of this stage. Export: the AnchoredI2V folder (model.py), plus `vae/` with
`export_vae` and `image_encoder/` with `export_image_encoder`; `moviedreamer_i2v.json` names the vision encoder it was trained with.
"""

from __future__ import annotations

import copy
import inspect
import os
import shutil
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from moviedreamer.encoders.clip_vision import load_vision_encoder
from moviedreamer.encoders.longclip import load_descriptor_encoder
from moviedreamer.errors import UserError
from moviedreamer.pipeline.profile import Profile
from moviedreamer.script.shot_text import script_shot_texts, swap_left_right
from moviedreamer.train.data import ShardIndex
from moviedreamer.train.harness import Stage
from moviedreamer.train.stages.i2v_args import I2VModelArgs, I2VOptions
from moviedreamer.vae import load_vae
from moviedreamer.video.conditioning import descriptor_inputs, encode_latents, motion_bucket
from moviedreamer.video.model import SETTINGS_FILE, AnchoredI2V, I2VSettings, require_svd_folder, time_ids, v_target
from moviedreamer.video.motion import flow_latents


class I2VStage(Stage):
    name = "i2v"
    keys = ("keyframes", "clips", "flow", "shots")
    mix = 4

    model_args, options = I2VModelArgs, I2VOptions  # a subclass (i2v_distill.py) extends them

    def __init__(self, cfg):
        super().__init__(cfg)
        self.args, self.opts = self.parse_sections(self.model_args, self.options)
        a = self.args
        for key, path in (("init_from", a.init_from), ("vae", a.vae), ("vision_encoder", a.vision_encoder), ("descriptor_encoder", a.descriptor_encoder)):
            if path is not None and not Path(path).expanduser().exists():
                raise UserError(f"model.{key}: expected {_WHAT[key]}, found no such path: {path}")
        if a.unet:
            # diffusers is heavy: loaded only when a model is built or read
            from diffusers import UNetSpatioTemporalConditionModel

            known = set(inspect.signature(UNetSpatioTemporalConditionModel.__init__).parameters) - {"self"}
            bad = sorted(set(a.unet) - known)
            if bad:
                raise UserError(f"{cfg.source or 'stage config'}: model.unet: unknown UNetSpatioTemporalConditionModel arguments {bad}; "
                                f"expected some of {sorted(known)}")
        if a.init_from_component is not None:
            a.init_from = _component(a.init_from_component)[0]
        if a.descriptor_component is not None:
            a.descriptor_encoder, a.descriptor_format = _component(a.descriptor_component)
        self.continues = a.init_from is not None and (Path(a.init_from).expanduser() / SETTINGS_FILE).is_file()
        if self.continues:
            if a.vision_encoder is None or (a.vae is None and not (Path(a.init_from).expanduser() / "vae").is_dir()):
                raise UserError(f"model.init_from {a.init_from} is an i2v folder: also give model.vision_encoder and model.vae "
                                "(the frozen encoders it was trained with)")
        elif a.init_from is not None:
            a.init_from = require_svd_folder(a.init_from)
        self.device = torch.device("cpu")
        self.flow_max = None  # the model's flow_max once built, when it has flow channels (video/motion.py)
        self.anchor_latent = False  # whether the model takes the keyframe's latents too
        self.residual = False  # whether it denoises differences from the conditioning frame (I2VSettings.residual)
        self.model_words = 0  # the model's descriptor_words once built

    # ------------------------------------------------------------------------------------------------ frozen parts

    @cached_property
    def vae(self):
        vae = load_vae(self.args.vae or Path(self.args.init_from).expanduser() / "vae")
        down = 2 ** (len(vae.config.block_out_channels) - 1)
        if any(s % down for s in self.opts.size):
            raise UserError(f"options.resolution {self.opts.resolution} must be a multiple of the VAE's downsampling factor {down}")
        return vae

    @cached_property
    def vision_source(self) -> dict:
        """{"path", "format"} of the anchor's vision encoder: model.vision_encoder, else the SVD folder's image_encoder/."""
        path = self.args.vision_encoder or Path(self.args.init_from).expanduser() / "image_encoder"
        fmt = self.args.vision_format or (None if self.args.vision_encoder else "hf-clip-vision")
        return {"path": str(Path(path).expanduser().resolve()), "format": fmt}

    @cached_property
    def vision(self):
        enc = load_vision_encoder(self.vision_source["path"], self.vision_source["format"])
        enc.model.requires_grad_(False)
        return enc

    @property
    def descriptor_source(self) -> dict:
        """{"path", "format"} of the descriptor token's text encoder ({} without one): the pipeline must embed the shot's
        text with the encoder the model was trained with, not whatever the profile's keyframe stages read."""
        if self.args.descriptor_encoder is None:
            return {}
        return {"path": str(Path(self.args.descriptor_encoder).expanduser().resolve()), "format": self.args.descriptor_format}

    @cached_property
    def descriptor(self):
        if self.args.descriptor_encoder is None:
            return None
        return load_descriptor_encoder(self.args.descriptor_encoder, self.args.descriptor_format)

    @cached_property
    def data_fps(self) -> int:
        return self.opts.fps or int(self.index.meta.get("fps", 8))

    @cached_property
    def index(self) -> ShardIndex:
        return ShardIndex(self.cfg.data)

    # ------------------------------------------------------------------------------------------------ model

    def build_model(self):
        a, o = self.args, self.opts
        desc_dim = self.descriptor.embed_dim if self.descriptor is not None else 0
        if a.init_from is None:
            down = 2 ** (len(self.vae.config.block_out_channels) - 1)
            c, m = self.vae.config.latent_channels, a.flow_channels or 0
            anchor = bool(a.anchor_latent)
            unet = {"sample_size": o.size[1] // down, "in_channels": 2 * c + m + (c if anchor else 0), "out_channels": c + m, "num_frames": o.frames,
                    **a.unet}
            if "addition_time_embed_dim" in unet and "projection_class_embeddings_input_dim" not in unet:
                unet["projection_class_embeddings_input_dim"] = 3 * unet["addition_time_embed_dim"]
            try:
                model = AnchoredI2V.build(unet, self.vision.embed_dim, desc_dim, a.descriptor_mode,
                                          I2VSettings.from_dict({"num_frames": o.frames, "flow_channels": m, "anchor_latent": anchor,
                                                                 "residual": bool(a.residual), **a.settings}), descriptor_words=a.descriptor_words or 0)
            except (TypeError, ValueError) as e:
                raise UserError(f"{self.cfg.source or 'stage config'}: model.unet: diffusers cannot build this UNetSpatioTemporalConditionModel ({e})") from None
        else:
            if self.continues:
                model = AnchoredI2V.from_pretrained(Path(a.init_from).expanduser()).train()
                cond = model.conditioning.config
                if (cond.descriptor_dim, cond.image_embed_dim, cond.descriptor_mode) != (desc_dim, self.vision.embed_dim, a.descriptor_mode):
                    raise UserError(f"model.init_from {a.init_from}: trained with descriptor width {cond.descriptor_dim}, anchor width "
                                    f"{cond.image_embed_dim}, descriptor_mode {cond.descriptor_mode!r}; this run has {desc_dim}, "
                                    f"{self.vision.embed_dim}, {a.descriptor_mode!r}")
            else:
                model = AnchoredI2V.from_svd(a.init_from, desc_dim, a.descriptor_mode)
            model.settings = I2VSettings.from_dict({**model.settings.__dict__, **a.settings})  # the config's over the folder's
            if a.anchor_latent and not model.settings.anchor_latent:
                model.add_anchor_latent()
            elif a.anchor_latent is False and model.settings.anchor_latent:
                raise UserError(f"model.init_from {a.init_from}: a model that takes anchor latents; model.anchor_latent false cannot remove them")
            if a.residual is not None and a.residual != model.settings.residual:
                raise UserError(f"model.init_from {a.init_from}: a model trained with residual {model.settings.residual}; "
                                f"model.residual {a.residual} would change what its outputs mean (leave it out)")
            have = model.settings.flow_channels
            if a.flow_channels is not None and a.flow_channels != have:
                if have:
                    raise UserError(f"model.init_from {a.init_from}: a model with {have} flow channels; model.flow_channels "
                                    f"{a.flow_channels} can only be given to an appearance-only one (or left out)")
                model.add_flow_channels(a.flow_channels)
            if a.descriptor_words is not None and a.descriptor_words != model.conditioning.descriptor_words:
                if model.conditioning.descriptor_words:
                    raise UserError(f"model.init_from {a.init_from}: a model with {model.conditioning.descriptor_words} descriptor words; "
                                    f"model.descriptor_words {a.descriptor_words} can only be given to one without (or left out)")
                model.add_descriptor_words(a.descriptor_words)
        model.settings.vae_scaling_factor = float(self.vae.config.scaling_factor)
        model.settings.image_encoder = dict(self.vision_source)  # the encoder it renders with (pipeline/profile.py)
        model.settings.descriptor_encoder = self.descriptor_source
        model.settings.fps = self.data_fps
        model.settings.check()
        m = model.settings.flow_channels
        if m and m != model.latent_channels:
            raise UserError(f"model.flow_channels {m}: the flow picture is encoded by the VAE, so expected its latent channels ({model.latent_channels})")
        self.flow_max = model.settings.flow_max if m else None
        self.anchor_latent = model.settings.anchor_latent
        self.residual = model.settings.residual
        self.model_words = model.conditioning.descriptor_words
        if o.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
        return model

    def after_initialize(self, engine, world_size: int) -> None:
        self.device = engine.device
        self.vae.to(self.device)
        self.vision.model.to(self.device)
        self.vision.device = torch.device(self.device)

    # ------------------------------------------------------------------------------------------------ data

    def samples(self, episode: dict, rng) -> list:
        clips, keyframes, flow, shots = episode.get("clips"), episode.get("keyframes"), episode.get("flow"), episode.get("shots") or []
        if clips is None:
            raise UserError(f"episode {episode['meta'].get('id')}: the i2v stage needs `clips` in the shards (docs/data_format.md)")
        if flow is None and self.args.flow_channels:
            raise UserError(f"episode {episode['meta'].get('id')}: model.flow_channels needs `flow` in the shards (docs/data_format.md)")
        out = []
        n_shots, t_len = clips.shape[0], clips.shape[1]
        length = min(self.opts.frames, t_len)
        if length < 2:
            raise UserError(f"episode {episode['meta'].get('id')}: clips of {t_len} frame(s); the i2v stage needs at least 2")
        width = clips.shape[3]
        script = script_shot_texts(self.index.path(episode["index"], ".yaml"), self._template) if "index" in episode else None
        for s in range(n_shots):
            start = 0 if rng.random() < self.opts.first_window_prob else int(rng.integers(0, t_len - length + 1))
            fl = flow[s, start : start + length - 1] if flow is not None else None
            meta = shots[s] if s < len(shots) else {}
            fallback = self._template.format(action=meta["action"], camera=meta["camera"]) if meta.get("action") and meta.get("camera") else ""
            out.append({
                "frames": clips[s, start : start + length],
                "keyframe": keyframes[s] if keyframes is not None else clips[s, 0],
                "motion": motion_bucket(fl, width, self._settings_value("motion_scale", 2048.0)),
                "flow": fl,
                "text": script[s] if script is not None and s < len(script) else fallback,  # the script's phrases, as at inference
                "first": start == 0,  # a shot's first segment (where the sampler guides)
            })
        return out

    @cached_property
    def _template(self) -> str:
        return str(self.args.settings.get("descriptor_template", I2VSettings.descriptor_template))

    def _settings_value(self, key, default):
        return float(self.args.settings.get(key, default))

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        w, h = self.opts.size
        if x.shape[-2:] == (h, w):
            return x
        down = x.shape[-1] > w
        return F.interpolate(x, size=(h, w), mode="area" if down else "bilinear", align_corners=None if down else False)

    @torch.no_grad()
    def collate(self, samples: list, device, dtype):
        o, b = self.opts, len(samples)
        length = min(s["frames"].shape[0] for s in samples)
        if o.min_frames is not None and o.min_frames < length:
            length = int(torch.randint(o.min_frames, length + 1, ()).item())
        frames = torch.stack([s["frames"][:length] for s in samples])  # [B, L, H, W, 3] uint8
        keys = torch.stack([s["keyframe"] for s in samples]).permute(0, 3, 1, 2)  # [B, 3, H, W] uint8
        flip = torch.rand(b) < 0.5 if o.hflip else torch.zeros(b, dtype=torch.bool)
        px = frames.flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        px = self._resize(px).view(b, length, 3, o.size[1], o.size[0])
        px[flip] = px[flip].flip(-1)
        keys[flip] = keys[flip].flip(-1)
        z = encode_latents(self.vae, px.flatten(0, 1).to(self.device))
        z = z.view(b, length, *z.shape[1:]).to(self.device)  # [B, L, C, h, w] scaled latents
        sf = float(self.vae.config.scaling_factor)
        image_embeds, _ = self.vision.encode_image(keys)
        descriptor = None
        if self.descriptor is not None:  # a flipped frame gets the flipped words ("left" <-> "right")
            texts = [swap_left_right(s["text"]) if f else s["text"] for s, f in zip(samples, flip.tolist())]
            descriptor = descriptor_inputs(self.descriptor, texts, self.model_words).to(self.device)
            keep = (torch.rand(b) >= o.descriptor_drop).to(descriptor.dtype).to(self.device)
            descriptor = descriptor * keep.view(-1, *[1] * (descriptor.dim() - 1))
        aug = torch.exp(o.noise_aug_mean + o.noise_aug_std * torch.randn(b)).to(self.device)
        ab = aug.view(-1, 1, 1, 1)
        cond0 = z[:, 0] / sf + ab * torch.randn(z[:, 0].shape).to(self.device)
        back = torch.randint(0, min(o.end_frame_from_last, length), (b,))
        end = z[torch.arange(b), length - 1 - back] / sf + ab * torch.randn(z[:, 0].shape).to(self.device)
        keep_end = (torch.rand(b) >= o.end_frame_drop).to(self.device)
        cond = cond0[:, None].repeat(1, length, 1, 1, 1)
        cond[:, -1] = torch.where(keep_end.view(-1, 1, 1, 1), end, cond0)
        if self.anchor_latent:  # the keyframe's latents on every frame, augmented like the conditioning frame
            key_px = self._resize(keys.float() / 127.5 - 1.0)
            anchor = encode_latents(self.vae, key_px.to(self.device)).to(self.device) / sf + ab * torch.randn(z[:, 0].shape).to(self.device)
            cond = torch.cat([cond, anchor[:, None].expand(-1, length, -1, -1, -1)], dim=2)
        if self.residual:  # the frames' differences from the clean conditioning frame (the sampler adds it back)
            z = z - z[:, :1]
        uncond = (torch.rand(b) < o.uncond_prob).to(self.device)
        cond = cond * (~uncond).to(cond.dtype).view(-1, 1, 1, 1, 1)
        sigma = torch.exp(o.sigma_mean + o.sigma_std * torch.randn(b)).to(self.device)
        c = z.shape[2]
        if self.flow_max is not None:  # joint appearance-motion (VideoJAM): the flow picture's latents after the frames'
            flow = flow_latents(self.vae, torch.stack([torch.as_tensor(s["flow"]) for s in samples]), length, self.flow_max, flip, o.size)
            z = torch.cat([z, flow.to(z)], dim=2)
        noise = torch.randn(z.shape)
        if o.noise_share > 0:
            noise = o.noise_share ** 0.5 * torch.randn((b, 1, *z.shape[2:])) + (1 - o.noise_share) ** 0.5 * noise
        noise = noise.to(self.device)
        noisy = z + sigma.view(-1, 1, 1, 1, 1) * noise
        if self.flow_max is not None and o.flow_input_drop > 0:  # no motion input: the branch Inner-Guidance contrasts with
            drop = (torch.rand(b) < o.flow_input_drop).to(self.device)
            noisy[:, :, c:] = noisy[:, :, c:] * (~drop).to(noisy.dtype).view(-1, 1, 1, 1, 1)
        ids = time_ids(self.data_fps, torch.tensor([s["motion"] for s in samples]), aug.cpu())
        to = dict(device=device, dtype=dtype)
        return {"noisy": noisy.to(**to), "sigma": sigma.to(device), "cond": cond.to(**to), "image_embeds": image_embeds.to(**to),
                "descriptor": None if descriptor is None else descriptor.to(**to), "ids": ids.to(**to), "uncond": uncond.to(device),
                "clean": z.to(device), "noise": noise.to(device), "end_keep": keep_end.to(device)}

    # ------------------------------------------------------------------------------------------------ loss

    def loss(self, model, batch):
        v = model(batch["noisy"], batch["sigma"], batch["cond"], batch["image_embeds"], batch["descriptor"], batch["ids"], batch["uncond"])
        target = v_target(batch["clean"].float(), batch["noise"].float(), batch["sigma"].float())
        err = (v.float() - target).pow(2)
        c = model.latent_channels
        err, flow_err = err[:, :, :c], err[:, :, c:]
        loss = err.mean()
        first = err[:, 0].mean().item()
        logs = {"mse_first": first, "mse_rest": err[:, 1:].mean().item(), "frames": float(err.shape[1]), "end_kept": batch["end_keep"].float().mean().item()}
        if flow_err.numel():
            loss = loss + self.opts.flow_weight * flow_err.mean()
            logs["mse_flow"] = flow_err.mean().item()
        return loss, logs

    # ------------------------------------------------------------------------------------------------ export

    def export(self, model, out_dir: Path, stream) -> dict:
        model = model.float().eval()
        samples = stream.take(self.opts.export_samples)
        motion = float(np.median([s["motion"] for s in samples]))
        if "motion_bucket" not in self.args.settings:
            model.settings.motion_bucket = round(motion, 2)
        if "noise_share" not in self.args.settings:
            model.settings.noise_share = self.opts.noise_share
        torch.manual_seed(self.cfg.seed + 7)
        losses = []
        for i in range(0, len(samples), 4):
            batch = self.collate(samples[i : i + 4], self.device, torch.float32)
            losses.append(self.loss(model.to(self.device), batch)[0].item())
        model = model.cpu()
        dtype = getattr(torch, self.opts.export_dtype)
        source = dict(self.vision_source)  # named relative to the export, as the keyframe tokenizer's sources are: the folders can move together
        source["path"] = "image_encoder" if self.args.export_image_encoder else os.path.relpath(source["path"], Path(out_dir).resolve())
        model.settings.image_encoder = source
        described = dict(self.descriptor_source)
        if described:  # the same folder as the bundled vision encoder (one CLIP, as the toy's): named as that copy
            bundled = self.args.export_image_encoder and described["path"] == self.vision_source["path"]
            described["path"] = "image_encoder" if bundled else os.path.relpath(described["path"], Path(out_dir).resolve())
        model.settings.descriptor_encoder = described
        (copy.deepcopy(model).to(dtype) if dtype != torch.float32 else model).save_pretrained(out_dir, self.opts.export_shard_size)
        if self.args.export_vae:  # in the export dtype too (it loads back as float32)
            (copy.deepcopy(self.vae).to(dtype) if dtype != torch.float32 else self.vae).save_pretrained(str(out_dir / "vae"), safe_serialization=True)
        if self.args.export_image_encoder:
            copy_vision_folder(Path(self.vision_source["path"]), out_dir / "image_encoder")
        return {"params": sum(p.numel() for p in model.parameters()), "unet_params": sum(p.numel() for p in model.unet.parameters()),
                "motion_bucket": motion, "heldout_loss": float(np.mean(losses)), "latent_channels": model.latent_channels,
                "vae_scaling_factor": model.settings.vae_scaling_factor, "fps": model.settings.fps, "export_samples": len(samples)}


def copy_vision_folder(src: Path, dst: Path) -> None:
    """The vision encoder's folder as it is (its weights, config and preprocessing), bundled with the export."""
    if not src.is_dir():
        raise UserError(f"model.export_image_encoder: expected the vision encoder to be a folder, found {src}")
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def _component(ref: str) -> tuple[Path, str]:
    """PROFILE.KEY of checkpoints.yaml -> (path, format); a clear MissingComponentError when it is not there."""
    name, key = ref.split(".")
    profile = Profile.load(name)
    return profile.path(key), profile.component(key).format


_WHAT = {"init_from": "an SVD / SVD-XT diffusers folder (model_index.json, unet/, vae/, image_encoder/, scheduler/)",
         "vae": "a diffusers VAE folder (config.json + diffusion_pytorch_model.safetensors)",
         "vision_encoder": "a CLIP vision encoder (open_clip folder, HF CLIPVisionModelWithProjection folder or open_clip checkpoint)",
         "descriptor_encoder": "a descriptor encoder (open_clip folder, LongCLIP .pt or HF CLIP text folder)"}

STAGE = I2VStage
