"""The instruction editor: InstructPix2Pix's model in diffusers' form, and the folder it lives in.

A `UNet2DConditionModel` whose input is the noisy latent with the source frame's latent concatenated on the channels
(2C in, C out), and whose cross-attention reads the instruction's per-token text states. The source latent is the
VAE posterior's mode *unscaled* and the noisy one is scaled, as diffusers' InstructPix2Pix pipeline has them, so a
published InstructPix2Pix folder and the toy editor run through the same sampler.

Two folder layouts load:
- the toy editor, written by `moviedreamer train edit`: `unet/` (diffusers, safetensors), `scheduler/`, and
  `edit_settings.json` (sampling defaults; the VAE and the text encoder it was trained with, as paths relative to the
  folder, so it ships next to the toy profile's VAE and CLIP without copying them);
- an InstructPix2Pix diffusers pipeline folder (`model_index.json`, `unet/` with 8 input channels, `text_encoder/`
  CLIPTextModel, `vae/`, `scheduler/`); an `edit_settings.json` there overrides the paper defaults.
Weights load from safetensors only: a folder holding only pickled `.bin` weights is refused with a clear error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from moviedreamer.encoders.cache import fingerprint_files
from moviedreamer.encoders.longclip import ClipBPE, load_descriptor_encoder
from moviedreamer.errors import CheckpointError, UserError, first_line
from moviedreamer.vae import load_diffusers, load_vae, read_json

SETTINGS_FILE = "edit_settings.json"
SCHEDULERS = ("DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DDPMScheduler",
              "DPMSolverMultistepScheduler", "PNDMScheduler", "LMSDiscreteScheduler")
CLIP_EOT = 49407  # CLIP's end-of-text id; Stable Diffusion's tokenizer pads with it


@dataclass
class EditSettings:
    """Sampling defaults and the frozen parts an editor was trained with (paths relative to its folder)."""

    resolution: int = 128  # frames are edited at this square size (resized in and back out)
    text_tokens: int = 16  # per-token text states the UNet attends to
    steps: int = 12
    image_guidance: float = 1.5  # s_I
    text_guidance: float = 5.0  # s_T
    anchors: int = 3  # Fairy's anchor frames per shot (0: every frame edited on its own)
    batch_frames: int = 8  # frames denoised together (each batch attends to the same anchors)
    shared_noise: bool = True  # one starting noise for every frame of a shot
    vocabulary: str = "toy"  # toy: warn about instruction words the toy editor cannot read; free: any text
    text_encoder: str = ""
    text_format: str | None = None  # open_clip-folder, longclip-pt, hf-clip-text (descriptor encoders), hf-clip-text-model
    vae: str = ""

    @classmethod
    def from_dict(cls, data: dict, where: str = SETTINGS_FILE) -> EditSettings:
        known = {f.name for f in fields(cls)}
        bad = sorted(set(data) - known)
        if bad:
            raise CheckpointError(f"{where}: unknown edit settings {bad}; expected some of {sorted(known)}")
        s = cls(**data)
        s.check(where)
        return s

    def check(self, where: str = "edit settings") -> None:
        if self.resolution < 8 or self.text_tokens < 1 or self.steps < 1 or self.anchors < 0 or self.batch_frames < 1:
            raise UserError(f"{where}: expected resolution >= 8, text_tokens >= 1, steps >= 1, anchors >= 0, batch_frames >= 1; "
                            f"found {self.resolution}, {self.text_tokens}, {self.steps}, {self.anchors}, {self.batch_frames}")
        if self.vocabulary not in ("toy", "free"):
            raise UserError(f"{where}: vocabulary: expected toy or free, found {self.vocabulary!r}")


PAPER_DEFAULTS = {"resolution": 512, "text_tokens": 77, "steps": 20, "image_guidance": 1.5, "text_guidance": 7.5, "anchors": 3,
                  "batch_frames": 8, "vocabulary": "free", "text_encoder": "text_encoder", "text_format": "hf-clip-text-model", "vae": "vae"}


class InstructionEditor:
    """UNet + scheduler config + settings; `folder` is where it was loaded from (paths in the settings are relative to it)."""

    def __init__(self, unet, scheduler_config: dict, settings: EditSettings, folder: Path | None = None):
        self.unet, self.scheduler_config, self.settings, self.folder = unet, dict(scheduler_config), settings, folder
        if unet.config.in_channels != 2 * unet.config.out_channels:
            raise CheckpointError(f"{folder or 'editor'}: expected a UNet with twice as many input channels as output channels "
                                  f"(noisy + source latents), found {unet.config.in_channels} in, {unet.config.out_channels} out")

    @classmethod
    def build(cls, unet_kwargs: dict, settings: EditSettings | None = None, scheduler_config: dict | None = None) -> InstructionEditor:
        """A fresh editor: `unet_kwargs` are UNet2DConditionModel arguments; in_channels is set to 2 x out_channels."""
        # diffusers is heavy: loaded only when a model is built or read
        from diffusers import UNet2DConditionModel

        kw = dict(unet_kwargs)
        kw["in_channels"] = 2 * kw.get("out_channels", 4)
        return cls(UNet2DConditionModel(**kw), scheduler_config or default_scheduler_config(), settings or EditSettings())

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.out_channels)

    def eps(self, noisy: torch.Tensor, source: torch.Tensor, t, text: torch.Tensor) -> torch.Tensor:
        return unet_eps(self.unet, noisy, source, t, text)

    def scheduler(self):
        """A fresh diffusers scheduler from the saved config (one of SCHEDULERS)."""
        import diffusers

        name = self.scheduler_config.get("_class_name", "DDIMScheduler")
        if name not in SCHEDULERS:
            raise CheckpointError(f"{self.folder}/scheduler: scheduler {name!r} is not supported; expected one of {', '.join(SCHEDULERS)}")
        return getattr(diffusers, name).from_config(self.scheduler_config)

    # -- the frozen parts
    def path(self, rel: str) -> Path:
        p = Path(rel).expanduser()
        return p if p.is_absolute() or self.folder is None else (self.folder / p)

    def load_vae(self, dtype: torch.dtype | None = None):
        if not self.settings.vae:
            raise CheckpointError(f"{self.folder}/{SETTINGS_FILE}: names no VAE (vae: a diffusers AutoencoderKL folder)")
        return load_vae(self.path(self.settings.vae), temporal=False, dtype=dtype)

    def load_text(self, device="cpu") -> InstructionText:
        if not self.settings.text_encoder:
            raise CheckpointError(f"{self.folder}/{SETTINGS_FILE}: names no text encoder (text_encoder: a folder or file)")
        path = self.path(self.settings.text_encoder)
        if self.settings.text_format == "hf-clip-text-model":
            return ClipTextStates(load_clip_text_model(path).to(device), self.settings.text_tokens)
        return DescriptorWords(load_descriptor_encoder(path, self.settings.text_format, device=device), self.settings.text_tokens)

    def fingerprint(self) -> str:
        """A hash of the UNet's files, the scheduler and the settings (the restyle units' keys)."""
        files = sorted(p for p in (self.folder / "unet").iterdir() if p.is_file()) if self.folder else []
        return fingerprint_files(files, json.dumps([self.scheduler_config, asdict(self.settings)], sort_keys=True, default=str))

    # -- folders
    def save_pretrained(self, folder: str | Path, dtype: torch.dtype | None = None, max_shard_size: str = "20MB") -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        unet = self.unet if dtype is None else _copy_as(self.unet, dtype)
        unet.save_pretrained(str(folder / "unet"), safe_serialization=True, max_shard_size=max_shard_size)
        (folder / "scheduler").mkdir(exist_ok=True)
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(self.scheduler_config, indent=2))
        (folder / SETTINGS_FILE).write_text(json.dumps(asdict(self.settings), indent=2))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype | None = None) -> InstructionEditor:
        """The toy editor's folder or an InstructPix2Pix pipeline folder (see the module docstring); weights in float32
        unless `dtype`."""
        from diffusers import UNet2DConditionModel

        folder = Path(folder).expanduser()
        ip2p = (folder / "model_index.json").is_file()
        if not (folder / SETTINGS_FILE).is_file() and not ip2p:
            raise CheckpointError(f"{folder}: expected an editor folder ({SETTINGS_FILE}, unet/, scheduler/: `moviedreamer train edit`) "
                                  "or an InstructPix2Pix diffusers folder (model_index.json), found "
                                  + ("neither" if folder.is_dir() else "no such folder"))
        data = dict(PAPER_DEFAULTS) if ip2p else {}
        if (folder / SETTINGS_FILE).is_file():
            data.update(read_json(folder / SETTINGS_FILE))
        settings = EditSettings.from_dict(data, str(folder / SETTINGS_FILE))
        require_safetensors(folder / "unet", "the editor's UNet")
        unet = load_diffusers(UNet2DConditionModel, folder / "unet", "the editor's UNet2DConditionModel", dtype or torch.float32)
        sched = folder / "scheduler" / "scheduler_config.json"
        config = read_json(sched) if sched.is_file() else default_scheduler_config()
        return cls(unet.eval().requires_grad_(False), config, settings, folder)


def unet_eps(unet, noisy: torch.Tensor, source: torch.Tensor, t, text: torch.Tensor) -> torch.Tensor:
    """The UNet's prediction for noisy latents [B, C, h, w] with the source latents [B, C, h, w] concatenated on the
    channels and the instruction's text states [B, L, D] in cross-attention (training and sampling alike)."""
    dtype = unet.dtype
    return unet(torch.cat([noisy, source], dim=1).to(dtype), t, encoder_hidden_states=text.to(dtype)).sample


def default_scheduler_config() -> dict:
    """Stable Diffusion's noise schedule (scaled linear betas, 1000 steps, epsilon), sampled with DDIM."""
    return {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False,
            "steps_offset": 1, "timestep_spacing": "trailing"}


def require_safetensors(folder: Path, what: str) -> None:
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if not any(n.endswith((".safetensors", ".safetensors.index.json")) for n in names):
        found = "no such folder" if not folder.is_dir() else ("only pickled weights (.bin)" if any(n.endswith(".bin") for n in names) else "no weights")
        raise CheckpointError(f"{folder}: expected {what} as safetensors (weights load from safetensors only), found {found}")


def _copy_as(module, dtype):
    import copy

    return copy.deepcopy(module).to(dtype)


# ------------------------------------------------------------------------------------------------- instruction text


class InstructionText:
    """Instruction texts -> per-token states [B, tokens, D] for the UNet's cross-attention ("" is the null text)."""

    tokens: int

    def __call__(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError


class DescriptorWords(InstructionText):
    """The toy profile's (or LongCLIP's) descriptor encoder: its first `tokens` projected per-token states."""

    def __init__(self, encoder, tokens: int):
        self.encoder, self.tokens = encoder, tokens
        self.dim = encoder.embed_dim

    def __call__(self, texts):
        return self.encoder.encode_words(list(texts), self.tokens)


class ClipTextStates(InstructionText):
    """A transformers CLIPTextModel (InstructPix2Pix's text_encoder/): last hidden states of 77 tokens. CLIP's BPE is
    the one open_clip ships, so the project's tokenizer reads it; padding is the end-of-text id, as in SD's tokenizer."""

    def __init__(self, model, tokens: int = 77):
        self.model, self.tokens = model.eval().requires_grad_(False), tokens
        self.bpe = ClipBPE(tokens)
        self.dim = model.config.hidden_size

    @torch.no_grad()
    def __call__(self, texts):
        ids, n_tokens, _ = self.bpe(list(texts))
        for i, n in enumerate(n_tokens):
            ids[i, n:] = CLIP_EOT
        device = next(self.model.parameters()).device
        return self.model(input_ids=ids.to(device)).last_hidden_state.float().cpu()


def load_clip_text_model(path: Path):
    from transformers import CLIPTextModel

    require_safetensors(path, "a CLIPTextModel")
    try:
        return CLIPTextModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    except Exception as e:  # transformers raises many types for a folder it cannot use
        raise CheckpointError(f"{path}: could not load a CLIPTextModel ({first_line(e)})") from None


__all__ = ["SETTINGS_FILE", "EditSettings", "InstructionEditor", "InstructionText", "default_scheduler_config"]
