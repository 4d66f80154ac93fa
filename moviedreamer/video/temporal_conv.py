"""The spatio-temporal UNet's temporal convolutions run as 2-D ones.

diffusers' `TemporalResnetBlock` convolves over time only, with `nn.Conv3d` kernels of (k, 1, 1). On the CPU PyTorch
has no oneDNN path for 3-D convolutions and falls back to `slow_conv3d` (im2col and a matmul per sample), which the
clip profile (bench/bench_clip_profile.py) shows among the top operators. The same convolution is a 2-D one over
[time, height x width]: identical weights (the (k, 1, 1) kernel viewed as (k, 1)), identical output, oneDNN's kernels.
The module stays an `nn.Conv3d` (only its class's `forward` changes), so state dicts, `save_pretrained` and
parameter names are untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalConv3d(nn.Conv3d):
    """An `nn.Conv3d` with a (k, 1, 1) kernel computed as a 2-D convolution over [time, positions]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = F.conv2d(x.reshape(b, c, t, h * w), self.weight.squeeze(-1), self.bias, stride=(self.stride[0], 1),
                     padding=(self.padding[0], 0), dilation=(self.dilation[0], 1), groups=self.groups)
        return y.view(b, y.shape[1], y.shape[2], h, w)


def is_temporal(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv3d and conv.kernel_size[1:] == (1, 1) and conv.stride[1:] == (1, 1) and conv.padding[1:] == (0, 0)
            and conv.dilation[1:] == (1, 1) and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple))


def temporal_convs_as_2d(module: nn.Module) -> int:
    """Switch every time-only `nn.Conv3d` in `module` to `TemporalConv3d` in place; returns how many."""
    n = 0
    for m in module.modules():
        if is_temporal(m):
            m.__class__ = TemporalConv3d
            n += 1
    return n
