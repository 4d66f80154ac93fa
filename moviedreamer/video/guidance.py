"""How a denoising step combines the UNet's predictions: all rows of a step go through the UNet as one batch.

    plain                      v = v(x, y)                                        1 row
    classifier-free (SVD's)    v = v(x, null) + g (v(x, y) - v(x, null))          2 rows, g linear over the frames
    + action guidance          ... + g_a (v(x, y) - v(x, y without the descriptor))      3 rows
    + Inner-Guidance           ... + w (v(x, y, d) - v(x, y, no motion input))    1 more row, first share of the steps

Inner-Guidance (VideoJAM) needs a joint appearance-motion model (video/motion.py): its noisy flow input d is zeroed
in the extra row, so the difference is what the model's own motion prediction adds, and the appearance is pushed
along it. The flow channels are guided alike and dropped when the segment is done.
"""

from __future__ import annotations

import torch

from moviedreamer.errors import UserError


class Guidance:
    """The rows of one segment's UNet batches and how their predictions combine (see the module docstring)."""

    def __init__(self, settings, length: int, tokens: torch.Tensor, ids: torch.Tensor, device, flow_channels: int = 0):
        s = settings
        self.cfg = s.guidance_max > 1.0 or s.guidance_min > 1.0
        self.action = s.action_guidance if self.cfg else None
        self.inner = s.inner_guidance if flow_channels else 0.0
        self.inner_steps = round(s.steps * s.inner_guidance_share) if self.inner > 0 else 0
        self.flow_channels = flow_channels
        self.g = torch.linspace(s.guidance_min, s.guidance_max, length, device=device).view(1, -1, 1, 1, 1) if self.cfg else None
        self.tokens, self.ids = tokens, ids
        if self.action is not None and tokens.shape[1] < 2:
            raise UserError("i2v settings: action_guidance needs a model that attends to the descriptor as its own token (descriptor_mode: token)")
        self.no_desc = None
        if self.action is not None:  # the anchor without the shot's action/camera descriptor token and its words
            self.no_desc = tokens.clone()
            self.no_desc[:, 1:] = 0

    def rows(self, step: int) -> int:
        """UNet rows at step `step`."""
        base = (3 if self.action is not None else 2) if self.cfg else 1
        return base + (1 if step < self.inner_steps else 0)

    def v(self, model, x: torch.Tensor, concat: torch.Tensor, t, step: int) -> torch.Tensor:
        """The guided v-prediction [1, F, C (+ flow), h, w] of the scaled model input x at step `step`."""
        xs, concats, tokens = [], [], []
        if self.cfg:
            xs.append(x), concats.append(torch.zeros_like(concat)), tokens.append(torch.zeros_like(self.tokens))
            if self.action is not None:
                xs.append(x), concats.append(concat), tokens.append(self.no_desc)
        xs.append(x), concats.append(concat), tokens.append(self.tokens)
        inner = step < self.inner_steps
        if inner:
            no_motion = x.clone()
            no_motion[:, :, -self.flow_channels:] = 0
            xs.append(no_motion), concats.append(concat), tokens.append(self.tokens)
        n = len(xs)
        ids = self.ids.repeat(n, 1)
        if n == 1:
            return model.unet_forward(x, concat, t, self.tokens, self.ids).float()
        out = model.unet_forward(torch.cat(xs), torch.cat(concats), t, torch.cat(tokens), ids).float().chunk(n)
        full = out[2 if self.action is not None else 1] if self.cfg else out[0]
        if self.cfg and self.action is None:  # SVD's guidance
            v = out[0] + self.g * (out[1] - out[0])
        elif self.cfg:  # null + g (no descriptor - null) + g_a (all - no descriptor)
            v = out[0] + self.g * (out[1] - out[0]) + self.action * (out[2] - out[1])
        else:
            v = full
        if inner:
            v = v + self.inner * (full - out[-1])
        return v
