"""How the toy world's judges are stored: a folder of config.json (the model's own config plus how it was trained)
and model.safetensors in float16 (half the committed size; loading copies it into float32 parameters)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from moviedreamer.errors import MissingComponentError
from moviedreamer.safeio import load_json, load_safetensors, save_safetensors


def save_half(model: nn.Module, config: dict, out_dir: str | Path, extra: dict | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({**config, **(extra or {})}, indent=1))
    return out


def read_folder(path: Path, what: str, how: str) -> tuple[dict, dict]:
    """(config, float32 state dict) of a judge folder; a missing one names `what` and `how` to make it."""
    if not (path / "model.safetensors").is_file():
        raise MissingComponentError(f"{what} is missing: expected config.json + model.safetensors in {path}; make it with: {how}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_safetensors(path / "model.safetensors").items()}
    return load_json(path / "config.json"), state


def frame_features(width: int) -> tuple[nn.Sequential, int]:
    """The frame judges' CNN: lean at full resolution (that is where the cost is), wider once downsampled; five
    stride-2 stages (128 px -> a 4 x 4 map). Returns the stack and its output channels."""
    chans = [3, width // 2, width, 2 * width, 4 * width, 6 * width]
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(chans, chans[1:])):
        layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        if i >= 1:
            layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers), chans[-1]
