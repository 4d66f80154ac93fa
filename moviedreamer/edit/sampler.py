"""InstructPix2Pix sampling over the frames of a shot, with Fairy's anchors.

Guidance (InstructPix2Pix, Brooks et al. 2023): three UNet rows per frame and step, combined as

    e = e(z, ∅, ∅) + s_I (e(z, c_I, ∅) - e(z, ∅, ∅)) + s_T (e(z, c_I, c_T) - e(z, c_I, ∅))

c_I the source frame's latent (∅: zeros), c_T the instruction's text states (∅: the empty text's, as in training).
s_I pulls towards the source frame (how much is kept), s_T towards the instruction (how strongly it is applied).

Frames: with anchors (anchors.py) each step first runs the anchor frames, recording their self-attention keys and
values, then the other frames in batches of `batch_frames`, attending to them; without (anchors = 0) every frame is
edited on its own, batched alike: the per-frame baseline. Every frame starts from the same noise (`shared_noise`) so
that the frames' only differences are their sources.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from moviedreamer.edit.anchors import anchor_attention, pick_anchors
from moviedreamer.edit.model import InstructionEditor, InstructionText
from moviedreamer.video.conditioning import (
    decode_latents,
    encode_latents,
    to_pixels,
    to_uint8,
)


def combine_guidance(e_full: torch.Tensor, e_image: torch.Tensor, e_null: torch.Tensor, s_image: float, s_text: float) -> torch.Tensor:
    """InstructPix2Pix's two-scale guidance from the rows (c_I, c_T), (c_I, ∅), (∅, ∅)."""
    return e_null + s_image * (e_image - e_null) + s_text * (e_full - e_image)


@dataclass
class EditStats:
    frames: int = 0
    unet_rows: int = 0  # UNet batch rows run (frames x guidance rows x steps)
    seconds: float = 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class EditSampler:
    """Edits the frames of a shot by an instruction (`edit`), with the editor's settings as defaults."""

    def __init__(self, editor: InstructionEditor, vae, text: InstructionText, device="cpu"):
        self.editor, self.vae, self.text = editor, vae, text
        self.device = torch.device(device)
        self.stats = EditStats()
        self._null = None

    # -- sizes and latents
    def edit_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the frames are edited at: the settings' resolution squared in area, the aspect kept, each side a
        multiple of what the VAE and the UNet's levels divide by."""
        res = self.editor.settings.resolution
        multiple = 2 ** (len(self.vae.config.block_out_channels) - 1) * 2 ** (len(self.editor.unet.config.block_out_channels) - 1)
        scale = (res * res / (height * width)) ** 0.5
        return tuple(max(multiple, round(s * scale / multiple) * multiple) for s in (height, width))

    def source_latents(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> the source latents [T, C, h, w] (posterior mode, unscaled: InstructPix2Pix's c_I)."""
        px = to_pixels(frames)
        size = self.edit_size(*px.shape[-2:])
        if tuple(px.shape[-2:]) != size:
            px = F.interpolate(px, size=size, mode="bilinear", antialias=True, align_corners=False)
        return encode_latents(self.vae, px) / self.vae.config.scaling_factor

    # -- sampling
    @torch.no_grad()
    def edit(self, frames: np.ndarray, instruction: str, seed: int = 0, anchors: int | None = None, steps: int | None = None,
             image_guidance: float | None = None, text_guidance: float | None = None, batch_frames: int | None = None,
             on_step=None) -> np.ndarray:
        """uint8 [T, H, W, 3] -> the edited frames, same shape. `on_step(done, total)` after each denoising step."""
        s = self.editor.settings
        anchors = s.anchors if anchors is None else anchors
        steps, batch = steps or s.steps, batch_frames or s.batch_frames
        s_img = s.image_guidance if image_guidance is None else image_guidance
        s_txt = s.text_guidance if text_guidance is None else text_guidance
        t0 = time.time()
        n, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
        source = self.source_latents(frames).to(self.device)
        rows = self._rows(instruction, s_img, s_txt)
        sched = self.editor.scheduler()
        sched.set_timesteps(steps, device=self.device)
        g = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((1 if s.shared_noise else n, *source.shape[1:]), generator=g)
        latents = (noise.expand(n, -1, -1, -1).clone() * sched.init_noise_sigma).to(self.device)
        step_kw = {"generator": g} if "generator" in inspect.signature(sched.step).parameters else {}
        keys = pick_anchors(n, anchors)
        rest = [i for i in range(n) if i not in keys]
        context = anchor_attention(self.editor.unet) if keys and rest else contextlib.nullcontext()
        with context as cache:
            for k, t in enumerate(sched.timesteps):
                x = sched.scale_model_input(latents, t)
                eps = torch.empty((len(rows), *latents.shape), device=self.device)
                if cache is not None:
                    cache.rows, cache.mode = len(rows), "record"
                    eps[:, keys] = self._run(x, source, t, rows, keys)
                    cache.mode = "use"
                    order = rest
                else:
                    order = list(range(n))
                for start in range(0, len(order), batch):
                    idx = order[start : start + batch]
                    eps[:, idx] = self._run(x, source, t, rows, idx)
                e = combine_guidance(eps[0], eps[1], eps[2], s_img, s_txt) if len(rows) == 3 else eps[0]
                latents = sched.step(e.to(latents.dtype), t, latents, **step_kw).prev_sample
                self.stats.unet_rows += n * len(rows)
                if on_step is not None:
                    on_step(k + 1, steps)
        pixels = decode_latents(self.vae, latents)
        if tuple(pixels.shape[-2:]) != (height, width):
            pixels = F.interpolate(pixels, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        self.stats.frames += n
        self.stats.seconds += time.time() - t0
        return to_uint8(pixels)

    def _rows(self, instruction: str, s_img: float, s_txt: float) -> list[tuple[bool, torch.Tensor]]:
        """(source kept, text states [1, L, D]) per guidance row: (c_I, c_T), (c_I, ∅), (∅, ∅); one row when both
        scales are 1 (the formula is then the first row alone)."""
        if self._null is None:
            self._null = self.text([""]).to(self.device)
        full = (True, self.text([instruction]).to(self.device))
        if s_img == 1.0 and s_txt == 1.0:
            return [full]
        return [full, (True, self._null), (False, self._null)]

    def _run(self, x, source, t, rows, idx: list[int]) -> torch.Tensor:
        """The UNet on frames `idx` for every row, as one batch laid out row after row -> [rows, len(idx), C, h, w]."""
        n = len(idx)
        xs = x[idx].repeat(len(rows), 1, 1, 1)
        src = torch.cat([source[idx] if keep else torch.zeros_like(source[idx]) for keep, _ in rows])
        text = torch.cat([states.expand(n, -1, -1) for _, states in rows])
        out = self.editor.eps(xs, src, t, text).float()
        return out.view(len(rows), n, *out.shape[1:])


__all__ = ["EditSampler", "EditStats", "combine_guidance"]
