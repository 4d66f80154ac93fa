"""Motion first, then appearance (Motion-I2V's split, with VideoJAM's lesson that motion must be learnt for itself):
a small model reads a segment's conditioning frame and the shot's "{action}. {camera}" and predicts, for each of the
next `frames - 1` frames, where every pixel of that frame was in the conditioning frame (a backward sampling map,
as a displacement in pixels) and whether it was in view there (not outside, not hidden behind something that has
moved away since: what a warp cannot show and the clip model has to draw). The sampler then draws each frame by warping the conditioning frame along its map and
lets the clip model refine the warped frames from a low noise level (video/sampler.py, `motion_field_sigma`).

Why a separate model: a diffusion model that must invent both where things move and what they look like learns,
on little data, to hold the picture still (the cheapest way to a low loss); a regression of the motion alone is a
far easier problem, and a frame warped along a good map already shows the action with the keyframe's own pixels,
so no blur is carried from segment to segment.

The network is a diffusers `UNet2DConditionModel` used as a regressor (its timestep input fixed at 0): input the
frame at `size` plus two coordinate channels (a zoom's motion depends on where a pixel is), output 3 x (frames - 1)
channels (x, y, visibility logit). What it reads of the text (`reader`):

- "toy-vocabulary" (the toy profile): the toy world's reader of the shot text (toyworld/grammar.py `motion_labels`:
  action, direction, framing, camera move), through the UNet's class embedding (`class_embed_type="projection"`,
  added to the time embedding of every block) and as one cross-attention token. Trained from the toy CLIP's word
  states instead, the field learnt nothing in a thousand steps (the position of "left" in a sentence moves with the
  number of names; docs/experiments/2026-12-07-video-motion-field.md);
- "descriptor": the descriptor encoder's pooled embedding and first `words` per-word states (open vocabularies).

With `shot_time`, every state also carries the time since the shot began at the segment's conditioning frame
(sinusoids, `time_features`): an action's phase decides where things go next (a jump rises in its first half-second
and falls in the next; a sitter lowers only in the first second), and one frame does not show it — without it the
regression learns the average over phases, which for a periodic motion is hardly any motion.

Output displacements are in units of `scale` pixels at the
model's `size`; `predict` returns them at the frame's own size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from moviedreamer.errors import CheckpointError, UserError
from moviedreamer.video.conditioning import descriptor_inputs, encode_latents

CONFIG_FILE = "motion_field.json"
READERS = ("toy-vocabulary", "descriptor")
FOLDER = "motion_field"  # its place in an i2v folder
TIME_FREQUENCIES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # Hz: the shot-time sinusoids (covers the toy actions' rhythms)
TIME_DIM = 3 + 2 * len(TIME_FREQUENCIES)
DEFAULT_DURATION = 4.0  # seconds: a shot whose length is not given


def time_features(times, durations=None) -> torch.Tensor:
    """Seconds since the shot began [B] and the shot's length in seconds [B] -> [B, TIME_DIM]: a ramp that saturates
    at 4 s, sin / cos per frequency, the share of the shot gone by, and 3 s / the length (a camera move spans its whole
    shot, so its speed goes with 1 / length)."""
    t = torch.as_tensor(times, dtype=torch.float32).view(-1, 1)
    d = torch.as_tensor(durations if durations is not None else [DEFAULT_DURATION] * len(t), dtype=torch.float32).view(-1, 1).clamp_min(0.5)
    f = torch.tensor(TIME_FREQUENCIES).view(1, -1) * 2 * torch.pi * t
    return torch.cat([t.clamp(0, 4) / 4, torch.sin(f), torch.cos(f), (t / d).clamp(0, 1), (3 / d).clamp(max=2)], dim=1)


@dataclass
class MotionFieldConfig:
    frames: int = 8  # a segment: the conditioning frame and frames - 1 predicted ones
    size: int = 64  # the square size the model reads and predicts at
    reader: str = "toy-vocabulary"  # what it reads of the shot text: "toy-vocabulary" labels or "descriptor" encoder states
    words: int = 0  # "descriptor": per-word states after the pooled embedding
    text_dim: int = 128  # the descriptor encoder's width
    scale: float = 8.0  # output unit, in pixels at `size`
    template: str = "{action}. {camera}"
    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    descriptor_encoder: str = ""  # the encoder it was trained with, relative to its folder (or as given)
    trained_steps: int = 0
    shot_time: bool = False  # each state also carries the time since the shot began (time_features)

    @property
    def state_dim(self) -> int:
        """The width of one state the UNet reads: the text's, plus the shot time's."""
        return self.text_dim + (TIME_DIM if self.shot_time else 0)

    @classmethod
    def from_dict(cls, data: dict) -> "MotionFieldConfig":
        known = {f.name for f in fields(cls)}
        bad = sorted(set(data) - known)
        if bad:
            raise UserError(f"motion field config: unknown keys {bad}; expected some of {sorted(known)}")
        return cls(**data).check()

    def check(self) -> "MotionFieldConfig":
        if self.reader not in READERS:
            raise UserError(f"motion field config: reader must be one of {READERS}, found {self.reader!r}")
        if self.frames < 2 or self.size < 16 or self.size % 8 or self.words < 0 or self.scale <= 0:
            raise UserError(f"motion field config: expected frames >= 2, size >= 16 and a multiple of 8, words >= 0, scale > 0; "
                            f"found {self.frames}, {self.size}, {self.words}, {self.scale}")
        return self


class MotionField(nn.Module):
    """frame [B, 3, H, W] in [-1, 1] + descriptor states [B, 1 + words, text_dim] -> displacements [B, frames - 1, H, W, 2]
    (pixels at H x W: frame t + 1's pixel p was at p + d in the given frame) and visibility [B, frames - 1, H, W]."""

    def __init__(self, config: MotionFieldConfig, unet=None):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.config = config.check()
        c = config.block_out_channels
        self.unet = unet or UNet2DConditionModel(
            sample_size=config.size, in_channels=5, out_channels=3 * (config.frames - 1), block_out_channels=tuple(c),
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(c) - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (len(c) - 1) + ("UpBlock2D",), layers_per_block=1,
            cross_attention_dim=config.state_dim, attention_head_dim=[max(1, ch // 32) for ch in c], norm_num_groups=16,
            class_embed_type="projection", projection_class_embeddings_input_dim=config.state_dim * (1 + config.words))
        if unet is None:  # a fresh one starts from "nothing moves, all in view"
            with torch.no_grad():
                self.unet.conv_out.weight.mul_(0.1)
                self.unet.conv_out.bias.copy_(torch.tensor([0.0, 0.0, 3.0] * (config.frames - 1)))
        s = config.size
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)

    def forward(self, frame: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """frame [B, 3, size, size], states [B, N, text_dim] -> [B, frames - 1, 3, size, size]: x, y in units of `scale`
        px, then the visibility logit."""
        x = torch.cat([frame, self.coords.expand(len(frame), -1, -1, -1).to(frame)], dim=1)
        t = torch.zeros(len(frame), device=frame.device, dtype=frame.dtype)
        states = states.to(frame)
        out = self.unet(x, t, encoder_hidden_states=states, class_labels=states.flatten(1)).sample
        return out.view(len(frame), self.config.frames - 1, 3, *out.shape[-2:])

    def states(self, encoder, texts: list[str], times=None, durations=None) -> torch.Tensor:
        """What the field reads of shot texts: [B, 1 + words, state_dim] (`encoder`: the descriptor encoder, for the
        "descriptor" reader; the toy vocabulary needs none). `times`: seconds since each shot began at the segment's
        conditioning frame (default 0: a shot's first segment) and `durations` the shots' lengths, read when the field
        was trained with `shot_time`."""
        return self.with_time(self.text_states(encoder, texts), times, durations)

    def with_time(self, text_states: torch.Tensor, times=None, durations=None) -> torch.Tensor:
        """`text_states` [B, N, text_dim] with the shot time appended to every state (when the field reads it)."""
        if not self.config.shot_time:
            return text_states
        t = time_features(times if times is not None else [0.0] * len(text_states), durations)
        return torch.cat([text_states, t[:, None].expand(-1, text_states.shape[1], -1).to(text_states)], dim=-1)

    def text_states(self, encoder, texts: list[str]) -> torch.Tensor:
        """The text's part of `states`: [B, 1 + words, text_dim]."""
        if self.config.reader == "toy-vocabulary":
            from moviedreamer.toyworld.grammar import motion_labels

            return torch.from_numpy(np.stack([motion_labels(t) for t in texts]))[:, None]
        if encoder is None:
            raise UserError("motion field: its reader is the descriptor encoder, and none was given")
        s = descriptor_inputs(encoder, texts, self.config.words)
        s = s[:, None] if s.dim() == 2 else s
        if s.shape[-1] != self.config.text_dim:
            raise UserError(f"motion field: the descriptor encoder gives {s.shape[-1]}-wide states, the model was trained on {self.config.text_dim}; "
                            f"use the encoder it was trained with ({self.config.descriptor_encoder or 'see its motion_field.json'})")
        return s

    @torch.no_grad()
    def predict(self, frame: torch.Tensor, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frame [B, 3, H, W] in [-1, 1] -> (displacements [B, frames - 1, H, W, 2] in pixels at H x W, visibility in
        [0, 1] [B, frames - 1, H, W])."""
        h, w = frame.shape[-2:]
        s = self.config.size
        small = F.interpolate(frame.float(), size=(s, s), mode="area") if (h, w) != (s, s) else frame.float()
        out = self(small.to(self.dtype), states.to(self.dtype)).float()
        b, n = out.shape[:2]
        out = F.interpolate(out.flatten(0, 1), size=(h, w), mode="bilinear", align_corners=False).view(b, n, 3, h, w)
        d = out[:, :, :2] * self.config.scale * torch.tensor([w / s, h / s]).view(1, 1, 2, 1, 1)
        return d.permute(0, 1, 3, 4, 2).contiguous(), torch.sigmoid(out[:, :, 2])

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def load_grown(self, state: dict) -> None:
        """Load a field's weights trained with narrower states (e.g. before `shot_time`): each weight that reads the
        states gets zero columns for the new inputs, so the grown field predicts exactly as the old one did."""
        own = self.state_dict()
        for k, v in state.items():
            if k in own and own[k].shape != v.shape:
                if own[k].dim() != 2 or own[k].shape[0] != v.shape[0] or own[k].shape[1] < v.shape[1]:
                    raise CheckpointError(f"motion field: cannot grow {k} from {tuple(v.shape)} to {tuple(own[k].shape)}")
                grown = torch.zeros_like(own[k])
                if k.startswith("unet.class_embedding") and self.config.words:  # one block of columns per state token
                    old_w, new_w = v.shape[1] // (1 + self.config.words), own[k].shape[1] // (1 + self.config.words)
                    for j in range(1 + self.config.words):
                        grown[:, j * new_w : j * new_w + old_w] = v[:, j * old_w : (j + 1) * old_w]
                else:
                    grown[:, : v.shape[1]] = v
                state = {**state, k: grown}
        self.load_state_dict(state)

    def save(self, folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.to(dtype).save_pretrained(folder, safe_serialization=True)  # a diffusers folder, motion_field.json beside it
        self.unet.float()
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "MotionField":
        from diffusers import UNet2DConditionModel

        folder = Path(folder)
        cfg_path = folder / CONFIG_FILE
        if not cfg_path.is_file():
            raise CheckpointError(f"{folder}: not a motion field folder (no {CONFIG_FILE})")
        try:
            config = MotionFieldConfig.from_dict(json.loads(cfg_path.read_text()))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
        unet = UNet2DConditionModel.from_pretrained(folder, torch_dtype=torch.float32)
        return cls(config, unet).eval()


def warp(frame: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Backward warp: frame [3, H, W] (or [B, 3, H, W], one per map) and displacements [T, H, W, 2] (pixels) ->
    [T, 3, H, W]: output pixel p takes the frame's value at p + d (bilinear; outside the frame, its border)."""
    t, h, w = displacement.shape[:3]
    src = frame[None].expand(t, -1, -1, -1) if frame.dim() == 3 else frame
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    x = xs + displacement[..., 0].float()
    y = ys + displacement[..., 1].float()
    grid = torch.stack([(x + 0.5) / w * 2 - 1, (y + 0.5) / h * 2 - 1], dim=-1)
    return F.grid_sample(src.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def compose(outer: torch.Tensor, inner: torch.Tensor, outer_seen: torch.Tensor | None = None,
            inner_seen: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Displacements p -> q -> r given outer (p -> q, [T, H, W, 2]) and inner (q -> r, [H, W, 2]): chaining a segment's
    maps onto its conditioning frame's own map back to the keyframe. With visibilities ([T, H, W], [H, W]): p is seen
    in r where it is seen in q and q in r."""
    moved = warp(torch.cat([inner.permute(2, 0, 1), (inner_seen if inner_seen is not None else torch.ones(inner.shape[:2]))[None]]), outer)
    seen = None if outer_seen is None else outer_seen * moved[:, 2]
    return outer + moved[:, :2].permute(0, 2, 3, 1), seen


def fill_unseen(frames: torch.Tensor, seen: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Frames [T, 3, H, W] in [-1, 1] with the pixels not seen in the source ([T, H, W] below `threshold`) inpainted
    from their surroundings (OpenCV's Telea): a warp would show there whatever hid them (a ghost of the character
    that walked away); the clip model refines the rest."""
    import cv2

    out = frames.clone()
    for t in range(len(frames)):
        hole = (seen[t] < threshold).numpy().astype(np.uint8)
        if hole.any():
            img = ((frames[t].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
            img = cv2.inpaint(np.ascontiguousarray(img), hole, 3, cv2.INPAINT_TELEA)
            out[t] = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1
    return out


@torch.no_grad()
def segment_frames(field: MotionField, text_states: torch.Tensor, key_px: torch.Tensor, cond: tuple | None, length: int, vae, device="cpu",
                   start_time: float = 0.0, visibility: bool = True, duration: float = DEFAULT_DURATION):
    """((maps [L, H, W, 2], visibility [L, H, W]), warped frames [L, 3, H, W], their latents [L, C, h, w] scaled) of a
    segment (video/sampler.py) that starts `start_time` seconds into its shot of `duration` seconds: the field reads the segment's conditioning frame (the keyframe [3, H, W] moved along
    `cond` = (its map back to the keyframe, its visibility); None: the keyframe itself) and each frame is drawn from
    the keyframe's pixels along its map composed with the conditioning frame's, what was not in view inpainted: a long
    shot never re-encodes its own output (no blur carried from segment to segment). `visibility` False: every pixel
    counts as seen (the warp shows whatever its map points at; nothing is inpainted or left to the clip model)."""
    h, w = key_px.shape[-2:]
    cond_map, cond_seen = cond if cond is not None else (torch.zeros(h, w, 2), torch.ones(h, w))
    cond_px = warp(key_px, cond_map[None]) if bool(cond_map.abs().any()) else key_px[None].float()
    if cond is not None:
        cond_px = fill_unseen(cond_px, cond_seen[None])
    d, seen = field.predict(cond_px.to(device), field.with_time(text_states, [start_time], [duration]).to(device))
    d, seen = d[0, : length - 1].cpu(), seen[0, : length - 1].cpu()
    if not visibility:
        seen = torch.ones_like(seen)
    d, seen = compose(d, cond_map, seen, cond_seen)
    maps, seen = torch.cat([cond_map[None], d]), torch.cat([cond_seen[None], seen])
    frames = fill_unseen(warp(key_px, maps).clamp(-1, 1), seen)
    return (maps, seen), frames, encode_latents(vae, frames).cpu()
