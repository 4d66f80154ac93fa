"""Vision encoder: images → CLIP pooled embedding + patch tokens (keyframe tokenizer input, I2V anchor).

`VisionEncoder.encode_image(images) -> (pooled [B, D], patch_tokens [B, N, W])`, where images are [B, 3, H, W]
(or [3, H, W]) RGB, float in [0, 1] or uint8. Preprocessing is CLIP's: resize the shortest side to the model's
size (bicubic, antialiased), centre-crop, normalise with the model's mean/std.
`pooled` is the projected CLS embedding (what CLIP compares with text); `patch_tokens` are the final-layer
patch tokens after the final LayerNorm (open_clip `ln_post`, HF `post_layernorm`), CLS excluded, width W.

Backends:
- "open_clip-folder":     the toy CLIP's vision tower, or a LAION ViT-H/14 folder (open_clip_config.json + weights);
- "open_clip-checkpoint": a bare open_clip state-dict file, architecture from open_clip's built-in config (ViT-H-14);
- "hf-clip-vision":       a `CLIPVisionModelWithProjection` folder (config.json + model.safetensors).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from moviedreamer.encoders.cache import fingerprint_files, source_files
from moviedreamer.encoders.openclip_folder import _unwrap, load_vision_tower, read_open_clip_folder
from moviedreamer.errors import CheckpointError, UserError, first_line
from moviedreamer.safeio import load_json, load_safetensors, torch_load_weights

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class VisionEncoder:
    def __init__(self, image_size: int, mean, std, embed_dim: int, width: int, device="cpu"):
        self.image_size, self.embed_dim, self.width = int(image_size), embed_dim, width
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.source: tuple[list, str] = ([], type(self).__name__)  # (weight files, settings), set by the loaders

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the weights and settings, for the pipeline's resume keys."""
        return fingerprint_files(*self.source)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device=None, dtype: torch.dtype | None = None) -> "VisionEncoder":
        """Move (and/or cast) the tower; images are preprocessed in float32 and cast to its dtype on the way in."""
        self.model.to(device=device, dtype=dtype)
        if device is not None:
            self.device = torch.device(device)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return (resize_center_crop(_as_float_images(images), self.image_size) - self.mean) / self.std

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.preprocess(images).to(self.device, self.dtype)
        with torch.no_grad():  # not inference_mode: the keyframe tokenizer trains on these tokens
            pooled, tokens = self._forward(x)
        return pooled.float(), tokens.float()

    @property
    def num_patches(self) -> int:
        raise NotImplementedError

    def _forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class OpenClipVisionEncoder(VisionEncoder):
    def __init__(self, tower: torch.nn.Module, preprocess_cfg: dict, device="cpu"):
        size = tower.image_size[0] if isinstance(tower.image_size, (tuple, list)) else tower.image_size
        super().__init__(size, preprocess_cfg.get("mean", OPENAI_MEAN), preprocess_cfg.get("std", OPENAI_STD),
                         tower.output_dim, tower.transformer.width, device)
        self.model = tower.to(self.device).eval()

    @property
    def num_patches(self) -> int:
        return math.prod(self.model.grid_size)

    def _forward(self, pixels):
        out = self.model.forward_intermediates(pixels, indices=1, normalize_intermediates=True, output_fmt="NLC")
        return out["image_features"], out["image_intermediates"][-1]


class HFClipVisionEncoder(VisionEncoder):
    def __init__(self, model, mean=OPENAI_MEAN, std=OPENAI_STD, device="cpu"):
        cfg = model.config
        super().__init__(cfg.image_size, mean, std, cfg.projection_dim, cfg.hidden_size, device)
        self.model = model.to(self.device).eval()

    @property
    def num_patches(self) -> int:
        return (self.model.config.image_size // self.model.config.patch_size) ** 2

    def _forward(self, pixels):
        out = self.model(pixel_values=pixels)
        tokens = self.model.vision_model.post_layernorm(out.last_hidden_state[:, 1:])
        return out.image_embeds, tokens


# ------------------------------------------------------------------------------------------------------- loaders


def load_open_clip_vision(path: str | Path, device="cpu") -> OpenClipVisionEncoder:
    model_cfg, preprocess_cfg, state, weights = read_open_clip_folder(path)
    return OpenClipVisionEncoder(load_vision_tower(model_cfg, state, weights), preprocess_cfg, device)


def load_open_clip_checkpoint(path: str | Path, arch: str = "ViT-H-14", device="cpu") -> OpenClipVisionEncoder:
    """A bare open_clip checkpoint file (e.g. open_clip_pytorch_model.bin) of a built-in architecture."""
    # open_clip is heavy: loaded only when a CLIP model is built or read
    from open_clip.factory import get_model_config

    path = Path(path)
    model_cfg = get_model_config(arch)
    if model_cfg is None:
        raise UserError(f"unknown open_clip architecture '{arch}' for {path}")
    state = load_safetensors(path) if path.suffix == ".safetensors" else _unwrap(torch_load_weights(path), path)
    return OpenClipVisionEncoder(load_vision_tower(model_cfg, state, path), {}, device)


def load_hf_clip_vision(path: str | Path, device="cpu") -> HFClipVisionEncoder:
    # transformers is heavy: loaded only on the paths that read HF folders
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = require_hf_folder(path, "a CLIPVisionModelWithProjection folder")
    config = load_hf_clip_config(path, CLIPVisionConfig)
    try:
        with quiet_transformers():  # a whole CLIPModel folder would print its (unused) text weights as a table
            model = CLIPVisionModelWithProjection.from_pretrained(str(path), config=config, local_files_only=True)
    except Exception as e:
        raise CheckpointError(f"{path / 'model.safetensors'}: could not load CLIPVisionModelWithProjection weights ({first_line(e)})") from None
    mean, std = OPENAI_MEAN, OPENAI_STD
    if (path / "preprocessor_config.json").is_file():
        pre = load_json(path / "preprocessor_config.json")
        mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
    return HFClipVisionEncoder(model, mean, std, device)


def load_vision_encoder(path: str | Path, fmt: str | None = None, device="cpu", dtype: torch.dtype | None = None) -> VisionEncoder:
    """`dtype`: the tower's weights once loaded (None: as built, float32)."""
    path = Path(path)
    if fmt is None:
        fmt = _sniff(path)
    elif fmt == "hf-clip-vision" and not (path / "config.json").exists() and (path / "open_clip_config.json").exists():
        fmt = "open_clip-folder"  # a LAION ViT-H/14 folder holding only its open_clip files
    loaders = {"open_clip-folder": load_open_clip_vision, "hf-clip-vision": load_hf_clip_vision,
               "open_clip-checkpoint": lambda p, d: load_open_clip_checkpoint(p, device=d)}
    if fmt not in loaders:
        raise UserError(f"{path}: vision encoder format '{fmt}' is not supported: expected open_clip-folder, open_clip-checkpoint or hf-clip-vision")
    encoder = loaders[fmt](path, device)
    if dtype is not None:
        encoder.to(dtype=dtype)
    settings = f"vision:{fmt}:{encoder.image_size}:{encoder.mean.flatten().tolist()}:{encoder.std.flatten().tolist()}"
    encoder.source = (source_files(path), settings + (f":{dtype}" if dtype not in (None, torch.float32) else ""))
    return encoder


def require_hf_folder(path: str | Path, what: str) -> Path:
    """A HF model folder must hold a valid config.json and model.safetensors: say which one is missing."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected {what} (config.json + model.safetensors), found " + ("a file" if path.exists() else "no such folder"))
    load_json(path / "config.json")
    if not (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").is_file():
        raise CheckpointError(f"{path / 'model.safetensors'}: expected the weights of {what}, found no such file")
    return path


def load_hf_clip_config(path: Path, config_cls):
    """The text or vision config of a HF CLIP folder. A full `CLIPModel` folder (LAION's ViT-H/14, LongCLIP converted
    to HF) works too: transformers takes its text_config/vision_config, but `projection_dim` sits at the top level
    there, so it is carried over (otherwise the sub-config's default, 512, would not match the weights)."""
    raw = load_json(path / "config.json")
    try:
        config = config_cls.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many types for a config it cannot use
        raise CheckpointError(f"{path / 'config.json'}: expected a {config_cls.__name__}, found one transformers cannot read ({first_line(e)})") from None
    if raw.get("model_type") == "clip" and isinstance(raw.get("projection_dim"), int):
        config.projection_dim = raw["projection_dim"]
    return config


@contextmanager
def quiet_transformers():
    """transformers at error level for one load (its per-key load report and progress bars are noise here)."""
    # transformers is heavy: loaded only on the paths that read HF folders
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _sniff(path: Path) -> str:
    if path.is_file():
        return "open_clip-checkpoint"
    if (path / "open_clip_config.json").exists():
        return "open_clip-folder"
    if (path / "config.json").exists():
        return "hf-clip-vision"
    raise CheckpointError(f"{path}: expected an open_clip folder (open_clip_config.json), a HF folder (config.json) or an open_clip checkpoint file, found "
                          + ("an unrecognised folder" if path.is_dir() else "no such file or folder"))



def _as_float_images(images) -> torch.Tensor:
    """A tensor [B, 3, H, W] (uint8, or float in [0, 1]), or uint8 RGB arrays [B, H, W, 3] / [H, W, 3] as decoded frames come."""
    if isinstance(images, np.ndarray) and images.ndim in (3, 4) and images.shape[-1] == 3:
        images = torch.from_numpy(np.array(images)).movedim(-1, -3)  # a copy: decoded frames may be read-only
    if not isinstance(images, torch.Tensor):
        raise UserError(f"expected images as a torch tensor [B, 3, H, W] or uint8 arrays [B, H, W, 3], found {type(images).__name__}")
    x = images.unsqueeze(0) if images.dim() == 3 else images
    if x.dim() != 4 or x.shape[1] != 3:
        raise UserError(f"expected images of shape [B, 3, H, W] (RGB), found {tuple(images.shape)}")
    if x.dtype == torch.uint8:
        return x.float().cpu() / 255.0
    if not x.is_floating_point():
        raise UserError(f"expected uint8 or float images, found {x.dtype}")
    x = x.float().cpu()
    if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise UserError(f"expected float images in [0, 1], found values in [{x.min():.3g}, {x.max():.3g}]")
    return x.clamp(0, 1)


def resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """float [B, 3, H, W] in [0, 1] → [B, 3, size, size]: shorter side to `size` (bicubic, antialiased), centre crop."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, :, top : top + size, left : left + size]
