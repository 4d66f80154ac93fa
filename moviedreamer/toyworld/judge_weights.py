"""How the toy world's judges are stored: a folder of config.json (the model's own config plus how it was trained)
and model.safetensors in float16 — or, for the committed judges, their large weight tensors in int8 with one float16
scale per output channel (`QUANTISED_SCALE` keys beside them): the toy profile has a 50 MB budget, and a judge only
has to rank classes, which per-channel int8 weights leave unchanged (bench/bench_judge_int8.py compares the verdicts).
Loading turns either form back into float32 parameters."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from moviedreamer.errors import MissingComponentError
from moviedreamer.safeio import load_json, load_safetensors, save_safetensors


QUANTISED_SCALE = "{name}.int8_scale"
INT8_MIN_ELEMENTS = 4096  # smaller tensors (norms, biases, heads) stay float16: they are a few KB in all


def quantise_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of ≥ INT8_MIN_ELEMENTS elements -> int8 with a symmetric float16 scale per output channel (dim 0);
    other floating tensors -> float16."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if not t.is_floating_point():
            out[name] = t
        elif t.numel() < INT8_MIN_ELEMENTS or t.dim() < 2:
            out[name] = t.half()
        else:
            rows = t.float().reshape(t.shape[0], -1)
            scale = (rows.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
            out[name] = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(t.shape)
            out[QUANTISED_SCALE.format(name=name)] = scale.half()
    return out


def dequantise(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 state dict of a stored judge, int8 or float16."""
    state = {}
    for name, t in stored.items():
        if name.endswith(QUANTISED_SCALE.format(name="")):
            continue
        scale = stored.get(QUANTISED_SCALE.format(name=name))
        if scale is not None:
            state[name] = t.float() * scale.float().reshape(-1, *([1] * (t.dim() - 1)))
        else:
            state[name] = t.float() if t.is_floating_point() else t
    return state


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
    state = dequantise(load_safetensors(path / "model.safetensors"))
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


def store_int8(src: str | Path, dst: str | Path) -> Path:
    """Copy a judge folder with its weights stored in int8 (quantise_int8); DST may be SRC."""
    src, dst = Path(src), Path(dst)
    config, state = read_folder(src, f"a judge in {src}", "moviedreamer toyworld train-judge -o RUN")
    dst.mkdir(parents=True, exist_ok=True)
    save_safetensors(quantise_int8(state), dst / "model.safetensors")
    (dst / "config.json").write_text(json.dumps({**config, "stored": "int8 per output channel"}, indent=1))
    return dst
