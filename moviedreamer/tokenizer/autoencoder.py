"""The keyframe tokenizer (diffusion autoencoder): frozen CLIP vision encoder → compressor → tokens → decoder → image.

    encode(images [B, 3, H, W] in [0, 1] or uint8) → tokens [B, n_tokens, d]
    decode(tokens, descriptors, faces, seed)        → images [B, 3, H, W] float in [0, 1]

Only the compressor and the decoder (UNet + projections) are parameters of this module; the vision encoder and the
VAE are frozen, held outside `parameters()`/`state_dict()`, loaded on first use and moved along by `.to(device)`.

Folder layout (format "moviedreamer" of checkpoints.yaml):

    keyframe_tokenizer/
      config.json        {"format": "moviedreamer", "component": "keyframe_tokenizer", "version": 1,
                          "compressor": {...}, "decoder": {...}, "unet": {diffusers UNet2DConditionModel config},
                          "settings": {...}, "sources": {"vision_encoder": {"path", "format"}, "vae": {"path"}}}
      model.safetensors  compressor.* + decoder.* (the UNet under decoder.unet.*)
      vision_encoder/, vae/   optional bundled copies of the frozen parts (used before `sources`)

`sources` paths are relative to the folder (the toy profile: ../clip and ../vae) or absolute. Latents follow the
diffusers convention: z = (mode(vae.encode(x)) - shift) * scaling_factor, x in [-1, 1].
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from moviedreamer.encoders.cache import fingerprint_files
from moviedreamer.encoders.clip_vision import load_vision_encoder
from moviedreamer.errors import CheckpointError, UserError, first_line
from moviedreamer.safeio import load_json, load_safetensors, save_safetensors
from moviedreamer.tokenizer.compressor import CompressorConfig, TokenCompressor
from moviedreamer.tokenizer.decoder import DecoderConfig, KeyframeDecoder, pad_slots, time_ids
from moviedreamer.vae import load_vae as load_shared_vae

FORMAT, COMPONENT, VERSION = "moviedreamer", "keyframe_tokenizer", 1
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclass
class TokenizerSettings:
    resolution: int = 128  # square training resolution (pixels); decode's default size
    latent_channels: int = 4
    vae_downsample: int = 4
    vae_scaling_factor: float = 1.0
    vae_shift_factor: float = 0.0
    sources: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "TokenizerSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class _Frozen:
    """Frozen parts, deliberately not nn.Modules of the tokenizer (so DeepSpeed, optimizers and state_dict skip them)."""

    def __init__(self, vision=None, vae=None):
        self.vision, self.vae = vision, vae


def load_vae(path: str | Path, dtype: torch.dtype | None = None):
    """The tokenizer's frozen image VAE (an AutoencoderKL folder)."""
    return load_shared_vae(path, temporal=False, dtype=dtype)


def vae_settings(vae, resolution: int) -> dict:
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    if resolution % down:
        raise UserError(f"keyframe tokenizer: resolution {resolution} must be a multiple of the VAE's downsampling factor {down}")
    return {"latent_channels": int(vae.config.latent_channels), "vae_downsample": down,
            "vae_scaling_factor": float(vae.config.scaling_factor or 1.0), "vae_shift_factor": float(getattr(vae.config, "shift_factor", None) or 0.0)}


class KeyframeTokenizer(nn.Module):
    def __init__(self, compressor: TokenCompressor, decoder: KeyframeDecoder, settings: TokenizerSettings | None = None, vision=None, vae=None):
        super().__init__()
        self.compressor, self.decoder = compressor, decoder
        self.settings = settings or TokenizerSettings()
        self.frozen = _Frozen()
        self.frozen_dtype: torch.dtype | None = None  # the dtype frozen parts it loads itself come in (None: float32)
        self.root: Path | None = None  # the folder it was loaded from (resolves `sources`)
        c, d = compressor.config, decoder.config
        if (c.n_tokens, c.token_dim) != (d.n_tokens, d.token_dim):
            raise UserError(f"keyframe tokenizer: the compressor makes {c.n_tokens} x {c.token_dim} tokens, the decoder reads {d.n_tokens} x {d.token_dim}")
        if decoder.unet.config.in_channels != self.settings.latent_channels:
            raise UserError(f"keyframe tokenizer: the UNet takes {decoder.unet.config.in_channels} latent channels, the VAE gives {self.settings.latent_channels}")
        self.attach(vision=vision, vae=vae)  # frozen, checked against the trained shapes

    @classmethod
    def build(cls, compressor: dict, decoder: dict, unet, settings: TokenizerSettings, vision=None, vae=None) -> "KeyframeTokenizer":
        return cls(TokenCompressor(CompressorConfig.from_dict(compressor)), KeyframeDecoder(DecoderConfig.from_dict(decoder), unet), settings, vision, vae)

    # ------------------------------------------------------------------------------------------------ frozen parts

    @property
    def device(self) -> torch.device:
        return self.compressor.proj_out.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.compressor.proj_out.weight.dtype

    @staticmethod
    def read_sources(path: str | Path) -> dict[str, Path]:
        """The frozen parts a tokenizer folder was trained with (config.json `sources`, or a bundled copy in the
        folder), as resolved paths: the composition root shares its own parts when they are these."""
        root = Path(path)
        cfg = json.loads((root / CONFIG_NAME).read_text(encoding="utf-8"))
        out = {}
        for key, src in ((cfg.get("settings") or {}).get("sources") or {}).items():
            if (root / key).is_dir():
                out[key] = (root / key).resolve()
            elif (src or {}).get("path"):
                p = Path(os.path.expanduser(src["path"]))
                out[key] = (p if p.is_absolute() else root / p).resolve()
        for key in ("vision_encoder", "vae"):
            if key not in out and (root / key).is_dir():
                out[key] = (root / key).resolve()
        return out

    def _source(self, key: str) -> Path:
        if self.root is not None and (self.root / key).is_dir():
            return self.root / key  # a bundled copy
        src = self.settings.sources.get(key) or {}
        if not src.get("path"):
            raise UserError(f"keyframe tokenizer: no {key} is known (config.json has no sources.{key}): pass {key}=... to from_pretrained")
        p = Path(os.path.expanduser(src["path"]))
        return p if p.is_absolute() or self.root is None else self.root / p

    @property
    def vision(self):
        if self.frozen.vision is None:
            path = self._source("vision_encoder")
            if not path.exists():
                raise CheckpointError(f"keyframe tokenizer: expected the vision encoder it was trained with at {path} "
                                      f"(config.json sources.vision_encoder), found nothing there: put it there or pass vision_encoder=...")
            fmt = (self.settings.sources.get("vision_encoder") or {}).get("format")
            self.attach(vision=load_vision_encoder(path, fmt, dtype=self.frozen_dtype))
        return self.frozen.vision

    @property
    def vae(self):
        if self.frozen.vae is None:
            self.attach(vae=load_vae(self._source("vae"), self.frozen_dtype))
        return self.frozen.vae

    def attach(self, vision=None, vae=None) -> "KeyframeTokenizer":
        """Use these frozen parts (e.g. the profile's already-loaded encoders); checked against the trained shapes."""
        c = self.compressor.config
        if vision is not None:
            found = (vision.width, vision.num_patches, vision.embed_dim if c.pooled_dim else 0)
            if found != (c.patch_dim, c.num_patches, c.pooled_dim):
                raise CheckpointError(f"keyframe tokenizer: the vision encoder gives (patch width, patches, pooled width) = {found}, the compressor "
                                      f"was trained on {(c.patch_dim, c.num_patches, c.pooled_dim)}: use the encoder it was trained with")
            vision.model.requires_grad_(False).eval()
            vision.model.to(self.device)
            vision.device = self.device
            self.frozen.vision = vision
        if vae is not None:
            s = vae_settings(vae, self.settings.resolution)
            if s["latent_channels"] != self.settings.latent_channels or s["vae_downsample"] != self.settings.vae_downsample:
                raise CheckpointError(f"keyframe tokenizer: the VAE has {s['latent_channels']} latent channels and downsamples {s['vae_downsample']}x, "
                                      f"the decoder was trained with {self.settings.latent_channels} and {self.settings.vae_downsample}x")
            self.frozen.vae = vae.requires_grad_(False).eval().to(self.device)
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        dev = fn(torch.zeros(1)).device  # follow device moves only: the frozen parts keep their dtype
        if self.frozen.vae is not None:
            self.frozen.vae.to(dev)
        if self.frozen.vision is not None:
            self.frozen.vision.model.to(dev)
            self.frozen.vision.device = dev
        return self

    # ------------------------------------------------------------------------------------------------ encode

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] (float in [0, 1] or uint8) → keyframe tokens [B, n_tokens, d]."""
        pooled, patches = self.vision.encode_image(images)
        return self.compressor(patches.to(self.device, self.dtype), pooled.to(self.device, self.dtype))

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] at the training resolution → scaled VAE latents (the decoder's target space)."""
        s = self.settings
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        z = self.vae.encode((x * 2 - 1).to(self.device, self.vae.dtype)).latent_dist.mode()
        return (z.float() - s.vae_shift_factor) * s.vae_scaling_factor

    @torch.no_grad()
    def latents_to_images(self, z: torch.Tensor) -> torch.Tensor:
        s = self.settings
        x = self.vae.decode((z / s.vae_scaling_factor + s.vae_shift_factor).to(self.vae.dtype)).sample.float()
        return ((x + 1) / 2).clamp(0, 1)

    # ------------------------------------------------------------------------------------------------ decode

    def conditions(self, tokens, descriptors=None, faces=None, keep_tokens=None, keep_desc=None, keep_face=None):
        """Pad/validate the inputs and build (hidden, pooled) for the decoder; `keep_*` mask inputs (False: null)."""
        d = self.decoder.config
        one = lambda x: x[None] if isinstance(x, torch.Tensor) and x.dim() == 2 else x  # noqa: E731  [N, D]: one keyframe
        descriptors, faces = one(descriptors), one(faces)
        b = tokens.shape[0] if tokens is not None else len(descriptors if descriptors is not None else faces)
        desc, desc_on, desc_given = pad_slots(descriptors if descriptors is not None else [None] * b, d.max_descriptors, d.descriptor_dim, "descriptors")
        face, face_on, face_given = pad_slots(faces if faces is not None else [None] * b, d.max_faces, d.face_dim, "faces")
        if keep_desc is not None:
            desc_on = desc_on & keep_desc.cpu()
        if keep_face is not None:
            face_on = face_on & keep_face.cpu()
        dev = self.device
        tok = None if tokens is None else tokens.to(dev)
        return self.decoder.context(tok, desc.to(dev), desc_on.to(dev), face.to(dev), face_on.to(dev), keep_tokens, desc_given, face_given)

    def null_conditions(self, batch: int):
        d = self.decoder.config
        z = lambda n, w: torch.zeros(batch, n, w, device=self.device)  # noqa: E731
        off = lambda n: torch.zeros(batch, n, dtype=torch.bool, device=self.device)  # noqa: E731
        return self.decoder.context(None, z(d.max_descriptors, d.descriptor_dim), off(d.max_descriptors), z(d.max_faces, d.face_dim), off(d.max_faces))

    @torch.no_grad()
    def decode_latents(self, tokens, descriptors=None, faces=None, seed: int | list[int] = 0, steps: int | None = None,
                       guidance: float | None = None, size: tuple[int, int] | None = None, sampler: str | None = None,
                       id_guidance: float | None = None) -> torch.Tensor:
        if tokens.dim() == 2:
            tokens = tokens[None]
        b = tokens.shape[0]
        seeds = [int(seed) + i for i in range(b)] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != b:
            raise UserError(f"keyframe tokenizer: {len(seeds)} seeds for {b} keyframes")
        w, h = size or (self.settings.resolution, self.settings.resolution)
        s = self.settings
        unit = s.vae_downsample * 2 ** (len(self.decoder.unet.config.block_out_channels) - 1)
        lh, lw = max(unit, round(h / unit) * unit) // s.vae_downsample, max(unit, round(w / unit) * unit) // s.vae_downsample
        hidden, pooled = self.conditions(tokens.to(self.dtype), descriptors, faces)
        null = self.null_conditions(b)
        d, tokens_only = self.decoder.config, None
        if id_guidance is not None or d.id_guidance is not None:  # two-scale guidance: the tokens without faces and texts
            off = lambda n: torch.zeros(b, n, dtype=torch.bool)  # noqa: E731
            tokens_only = self.conditions(tokens.to(self.dtype), descriptors, faces, keep_desc=off(d.max_descriptors), keep_face=off(d.max_faces))
        ids = time_ids(lh * s.vae_downsample, lw * s.vae_downsample, b).to(self.device)
        gens = [torch.Generator().manual_seed(x) for x in seeds]
        return self.decoder.sample(hidden, pooled, ids, (s.latent_channels, lh, lw), gens, steps, guidance, sampler, null,
                                   tokens_only, id_guidance)

    @torch.no_grad()
    def decode(self, tokens, descriptors=None, faces=None, seed: int | list[int] = 0, steps: int | None = None,
               guidance: float | None = None, size: tuple[int, int] | None = None, sampler: str | None = None,
               id_guidance: float | None = None) -> torch.Tensor:
        """Tokens [B, n, d] (or [n, d]) + optional descriptor embeddings [B, Nd, Dd] and face embeddings [B, Nf, Df]
        (lists of [Ni, D] too; all-zero rows are absent) → images [B, 3, H, W] in [0, 1]. Row i draws its noise from
        `seed + i` (or `seed[i]`), so a keyframe decodes the same alone or in a batch. `size` = (width, height)."""
        z = self.decode_latents(tokens, descriptors, faces, seed, steps, guidance, size, sampler, id_guidance)
        images = self.latents_to_images(z)
        if size is not None and tuple(images.shape[-2:]) != (size[1], size[0]):
            images = F.interpolate(images, size=(size[1], size[0]), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        return images

    def reconstruct(self, images, descriptors=None, faces=None, seed=0, **kw) -> torch.Tensor:
        with torch.no_grad():
            tokens = self.encode(images)
        return self.decode(tokens, descriptors, faces, seed, **kw)

    # ------------------------------------------------------------------------------------------------ training

    def forward(self, patches, pooled, noisy, timesteps, descriptors, desc_on, faces, face_on, keep_tokens, ids, desc_given=None, face_given=None):
        """One denoising prediction from cached frozen features: patches/pooled of the CLIP encoder, padded conditions."""
        tokens = self.compressor(patches, pooled)
        hidden, pooled_emb = self.decoder.context(tokens, descriptors, desc_on, faces, face_on, keep_tokens, desc_given, face_given)
        return self.decoder(noisy, timesteps, hidden, pooled_emb, ids)

    # ------------------------------------------------------------------------------------------------ io

    def config_dict(self) -> dict:
        return {"format": FORMAT, "component": COMPONENT, "version": VERSION, "compressor": self.compressor.config.to_dict(),
                "decoder": self.decoder.config.to_dict(), "unet": {k: v for k, v in dict(self.decoder.unet.config).items() if not k.startswith("_")},
                "settings": asdict(self.settings)}

    def save_pretrained(self, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
        """`dtype` (e.g. torch.float16: half the size, for the committed toy weights) converts floating tensors on the
        way out; from_pretrained loads them back in float32."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_safetensors(state, out_dir / WEIGHTS_NAME, metadata={"format": "pt", "component": COMPONENT})
        (out_dir / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2) + "\n")
        return out_dir

    @classmethod
    def from_pretrained(cls, path: str | Path, vision_encoder=None, vae=None, device="cpu", dtype: torch.dtype | None = None) -> "KeyframeTokenizer":
        """A tokenizer folder → the model (eval, frozen parts loaded on first use unless given). `dtype`: the compressor's
        and decoder's weights once loaded (None: float32, whatever the file stores); the frozen parts keep theirs."""
        # diffusers is heavy: loaded only when a model is built or read
        from diffusers import UNet2DConditionModel

        path = Path(path).expanduser()
        what = f"a keyframe tokenizer folder ({CONFIG_NAME} + {WEIGHTS_NAME}, made by `moviedreamer train tokenizer`)"
        if not path.is_dir():
            raise CheckpointError(f"{path}: expected {what}, found " + ("a file" if path.exists() else "no such folder"))
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (path / name).is_file():
                raise CheckpointError(f"{path / name}: expected this file of {what}, found no such file")
        cfg = load_json(path / CONFIG_NAME)
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT or cfg.get("component") != COMPONENT:
            found = (cfg.get("format"), cfg.get("component")) if isinstance(cfg, dict) else type(cfg).__name__
            raise CheckpointError(f"{path / CONFIG_NAME}: expected format '{FORMAT}' and component '{COMPONENT}', found {found}")
        if cfg.get("version") != VERSION:
            raise CheckpointError(f"{path / CONFIG_NAME}: expected version {VERSION}, found {cfg.get('version')!r}")
        missing = [k for k in ("compressor", "decoder", "unet", "settings") if not isinstance(cfg.get(k), dict)]
        if missing:
            raise CheckpointError(f"{path / CONFIG_NAME}: expected the sections {missing}, found none")
        try:
            with torch.device("meta"):  # no random init: every tensor comes from the file (assign=True)
                unet = UNet2DConditionModel.from_config(cfg["unet"])
                model = cls.build(cfg["compressor"], cfg["decoder"], unet, TokenizerSettings.from_dict(cfg["settings"]))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path / CONFIG_NAME}: cannot build the model it describes ({first_line(e)})") from None
        state = load_safetensors(path / WEIGHTS_NAME)
        expected = model.state_dict()
        miss, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        bad = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        if miss or extra or bad:
            raise CheckpointError(f"{path / WEIGHTS_NAME}: does not match {CONFIG_NAME}: missing {miss[:3]}, unexpected {extra[:3]}, "
                                  f"mis-shaped {bad[:3]} ({len(miss)}/{len(extra)}/{len(bad)})")
        state = {k: v.to(dtype or expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}  # 16-bit files load as float32 unless asked
        model.load_state_dict(state, strict=True, assign=True)
        model.root = path
        model.frozen_dtype = dtype
        model = model.to(device).eval().requires_grad_(False)
        model.attach(vision=vision_encoder, vae=vae)
        return model

    @property
    def fingerprint(self) -> str:
        """Hash of the weights and config (and the frozen parts' sources), for the pipeline's resume keys."""
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.sha256(json.dumps(self.config_dict(), sort_keys=True, default=str).encode())
            if self.root is not None:  # loaded from a folder: hash its files (big files by size + head and tail)
                h.update(fingerprint_files([self.root / CONFIG_NAME, self.root / WEIGHTS_NAME]).encode())
            else:
                for k, v in sorted(self.state_dict().items()):
                    h.update(k.encode())
                    h.update(v.detach().float().cpu().numpy().tobytes())
            for part in (self.frozen.vision,):
                if part is not None and hasattr(part, "fingerprint"):
                    h.update(str(part.fingerprint).encode())
            if self.dtype != torch.float32:  # a 16-bit decoder draws other keyframes
                h.update(str(self.dtype).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint
