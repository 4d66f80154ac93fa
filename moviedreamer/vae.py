"""Loading the frozen diffusers VAEs shared by the keyframe tokenizer and the I2V stage."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from moviedreamer.errors import CheckpointError, first_line
from moviedreamer.layout import channels_last_convs


def load_vae(path: str | Path, temporal: bool = True, dtype: torch.dtype | None = None):
    """A diffusers VAE folder: AutoencoderKL (toy, SD/SDXL) or, when `temporal`, SVD's AutoencoderKLTemporalDecoder.

    Frozen, in eval mode, with channels-last 2-D convolutions (faster on CPU, moviedreamer/layout.py). `dtype`: its
    weights once loaded (None: float32); float16 is refused by a VAE whose config says `force_upcast` (SDXL's overflows
    in float16): it stays in float32."""
    # diffusers is heavy: loaded only when a model is built or read
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder

    path = Path(path).expanduser()
    kinds = "AutoencoderKL or AutoencoderKLTemporalDecoder" if temporal else "AutoencoderKL"
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: expected a diffusers VAE folder ({kinds}: config.json + diffusion_pytorch_model.safetensors), "
                              "found " + ("no config.json there" if path.is_dir() else "no such folder"))
    cls_name = read_json(path / "config.json").get("_class_name", "AutoencoderKL")
    cls = AutoencoderKLTemporalDecoder if cls_name == "AutoencoderKLTemporalDecoder" else AutoencoderKL
    if cls is not AutoencoderKL and not temporal:
        raise CheckpointError(f"{path}: expected a diffusers AutoencoderKL (an image VAE), found {cls_name}")
    if dtype == torch.float16 and read_json(path / "config.json").get("force_upcast"):
        dtype = torch.float32
    return channels_last_convs(load_diffusers(cls, path, f"a diffusers {cls.__name__}", dtype).eval().requires_grad_(False))


def load_diffusers(cls, path: Path, what: str, dtype: torch.dtype | None = None):
    """`cls.from_pretrained(path)` from a local folder, any failure a CheckpointError naming `what`."""
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path / 'config.json'}: expected the config of {what}, found no such file")
    try:
        kw = {"torch_dtype": dtype} if dtype is not None else {}
        return cls.from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False, **kw)
    except Exception as e:  # diffusers raises many types for a folder it cannot use
        msg = first_line(e)
        raise CheckpointError(f"{path}: could not load {what} ({msg})") from None


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: expected a JSON file, found no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: expected valid JSON, found a broken file ({e})") from None
