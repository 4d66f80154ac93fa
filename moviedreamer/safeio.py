"""Safe loading of weights: safetensors first, `torch.load(weights_only=True)` where a legacy file must be
read. Every failure names the file and says what is wrong; nothing in a file is ever executed."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from moviedreamer.errors import CheckpointError


def load_safetensors(path: str | Path, device: str = "cpu") -> dict:
    """Read a .safetensors file into a dict of tensors, with clear errors for missing/truncated/corrupt files."""
    path = Path(path)
    _require_file(path, "a .safetensors weights file")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path}: expected a valid safetensors file, found a truncated or corrupt one ({_short(e)})") from None


def save_safetensors(tensors: dict, path: str | Path, metadata: dict | None = None) -> None:
    """Write atomically (temp file + rename), so a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def torch_load_weights(path: str | Path):
    """`torch.load` restricted to tensors and plain containers: pickled code is refused, not run."""
    path = Path(path)
    _require_file(path, "a PyTorch weights file")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load: the file contains pickled code or objects that are not weights ({_short(e)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: expected a PyTorch weights file, found a truncated or corrupt one ({_short(e)})") from None


def load_json(path: str | Path) -> dict:
    path = Path(path)
    _require_file(path, "a JSON config file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: expected valid JSON, found {_short(e)}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: expected {what}, found no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: expected {what}, found a directory")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: expected {what}, found an empty file")


def _short(e: Exception, limit: int = 400) -> str:
    """The error's first line; a longer one is cut at a space (a path or a name is never cut in the middle)."""
    text = str(e).strip().splitlines()
    first = text[0] if text else type(e).__name__
    return first if len(first) <= limit else first[:limit].rsplit(" ", 1)[0] + " …"
