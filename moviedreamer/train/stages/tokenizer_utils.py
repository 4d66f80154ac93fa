"""Helpers of `moviedreamer train tokenizer`: starting from another folder's matching tensors (`model.init_weights`) and
the per-pixel loss weight of `options.region_weight`."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from moviedreamer.errors import UserError
from moviedreamer.safeio import load_safetensors


def load_matching(model, folder: Path, exclude: list[str], zero: list[str] = ()) -> None:
    """Copy a tokenizer folder's tensors into `model` by name, except those under an `exclude` prefix; every other tensor
    of the model must exist there with the same shape (a UserError names the first that do not). Then the tensors under a
    `zero` prefix are set to 0: an added residual block whose output projection is zero leaves the loaded model's
    function unchanged at step 0 (a prefix that names no tensor is an error, not a silent no-op)."""
    state = load_safetensors(Path(folder) / "model.safetensors")
    own = model.state_dict()
    keep = {k: v for k, v in own.items() if not any(k.startswith(p) for p in exclude)}
    bad = [f"{k} {tuple(v.shape)} vs {tuple(state[k].shape) if k in state else 'absent'}" for k, v in keep.items()
           if k not in state or state[k].shape != v.shape]
    if bad:
        raise UserError(f"model.init_weights: {folder} does not hold {len(bad)} tensors of this model ({'; '.join(bad[:3])}): "
                        "add their prefixes to model.init_exclude or match the architecture")
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in keep.items()}, strict=False)
    params, zeroed = dict(model.named_parameters()), 0
    with torch.no_grad():
        for prefix in zero:
            hit = [k for k in params if k.startswith(prefix)]
            if not hit:
                raise UserError(f"model.init_zero: no tensor of this model is named {prefix}*")
            for k in hit:
                params[k].zero_()
            zeroed += len(hit)
    print(f"init_weights: {len(keep)} of {len(own)} tensors from {folder} ({len(own) - len(keep)} excluded, random; "
          f"{zeroed} zeroed)", flush=True)


def region_weight_map(boxes: dict | None, face_boxes: dict | None, frame_width: int, latent_hw: tuple[int, int], flip: bool,
                      characters: float, faces: float) -> torch.Tensor:
    """Per latent pixel loss weight [h, w]: `characters` inside character boxes, `faces` inside face boxes (the larger
    where both), 1 elsewhere; scaled to mean 1. Boxes are [x0, y0, x1, y1] in keyframe pixels (square keyframes);
    `flip` mirrors them like the mirrored keyframe. A box covers every latent pixel it touches."""
    h, w = latent_hw
    scale = w / frame_width
    out = torch.ones(h, w)
    for table, value in ((boxes, characters), (face_boxes, faces)):
        for x0, y0, x1, y1 in (table or {}).values():
            if flip:
                x0, x1 = frame_width - x1, frame_width - x0
            c0, c1 = max(0, math.floor(x0 * scale)), min(w, math.ceil(x1 * scale))
            r0, r1 = max(0, math.floor(y0 * scale)), min(h, math.ceil(y1 * scale))
            if c1 > c0 and r1 > r0:
                out[r0:r1, c0:c1] = out[r0:r1, c0:c1].clamp(min=value)
    return out / out.mean()
