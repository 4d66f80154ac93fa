"""Weights written as safetensors shards of a bounded size, read back whole.

Why: carried runs are committed to the repository, and one file per model would grow with the model (a clip model's
weights and their average are tens of MB each); shards keep every committed file as small as the exported models'
(diffusers' `max_shard_size`). Writing is huggingface_hub's `save_torch_state_dict` (its index format); reading
accepts either a single file or that index, so folders written before sharding still load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

MAX_SHARD = "12MB"


def _index(folder: Path, filename: str) -> Path:
    return Path(folder) / (filename + ".index.json")


def exists(folder: Path, filename: str) -> bool:
    """True when FOLDER holds FILENAME whole or as shards."""
    return (Path(folder) / filename).is_file() or _index(folder, filename).is_file()


def save(tensors: dict[str, torch.Tensor], folder: Path, filename: str, max_shard_size: str = MAX_SHARD) -> None:
    """Write TENSORS as FILENAME (e.g. `weights.safetensors`) or, above MAX_SHARD, as numbered shards beside an index."""
    from huggingface_hub import save_torch_state_dict

    stem = filename.removesuffix(".safetensors")
    save_torch_state_dict({k: v.contiguous() for k, v in tensors.items()}, str(folder),
                          filename_pattern=stem + "{suffix}.safetensors", max_shard_size=max_shard_size)


def load(folder: Path, filename: str) -> dict[str, torch.Tensor]:
    """All tensors of FILENAME in FOLDER, from the single file or from the shards its index names."""
    folder = Path(folder)
    index = _index(folder, filename)
    if not index.is_file():
        return load_file(str(folder / filename))
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        tensors.update(load_file(str(folder / shard)))
    return tensors
