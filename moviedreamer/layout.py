"""Memory layout of frozen image models.

oneDNN's 2-D convolutions run faster on channels-last (NHWC) weights on CPU (bench/bench_video.py, speed, prints
the ratio for the toy VAE). The results are the same convolution up to float rounding. 3-D convolutions (SVD's temporal decoder) are left as they are.
"""

from __future__ import annotations

import torch


def channels_last_convs(module: torch.nn.Module) -> torch.nn.Module:
    """Stores every Conv2d weight of `module` channels-last, in place; returns the module."""
    for conv in module.modules():
        if isinstance(conv, torch.nn.Conv2d):
            conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    return module
