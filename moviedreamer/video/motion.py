"""Joint appearance-motion denoising (VideoJAM): the UNet also denoises the clip's optical flow.

With `flow_channels` m = 2 the UNet's noisy input is [appearance latents (C) ; flow (m)] per frame, followed as
always by the conditioning latents (C), and it predicts v for both: in_channels = 2 C + m, out_channels = C + m.
The flow channels hold each frame's forward optical flow (frame t -> t + 1; the last frame repeats the one before),
area-pooled to the latent grid and measured in latent cells, times `flow_scale`. Training adds `flow_weight` x
the flow channels' v-MSE to the loss, so the model has to know where things move - from the action and camera text
and the time ids - and the appearance it draws shares that representation (VideoJAM's argument: a pixel-only loss
hardly rewards motion). At sampling the flow channels start from noise and are denoised with the appearance, then
dropped; with m = 0 the model and the sampler are exactly the appearance-only ones.

`grow_flow_channels` turns an appearance-only UNet into a joint one without changing what it draws: the new input
channels' weights start at zero, the new output rows at random (as large as the appearance rows). Zero output rows
would pass no gradient of the flow loss back into the network, which then learns the flow only through a linear
readout of its last features: on the toy model, 500 steps of that left the flow MSE exactly at predicting zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moviedreamer.errors import UserError


def flow_latents(flow: torch.Tensor, length: int, grid: tuple[int, int], scale: float, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame flow targets [B, length, 2, h, w] from the shards' forward flow [B, >= length - 1, H, W, 2] (pixels
    (x, y)): frame t gets flow t -> t + 1, the last frame the one before it; area-pooled to `grid` (h, w), in latent
    cells (pixels x w / W) times `scale`; rows with `flip` [B] mirrored (x negated) like their frames."""
    if length < 2:
        raise UserError(f"i2v flow targets: a window of {length} frame(s); at least 2 are needed")
    if flow.shape[1] < length - 1:
        raise UserError(f"i2v flow targets: {flow.shape[1]} flow fields for a window of {length} frames (expected {length - 1})")
    b = flow.shape[0]
    f = flow[:, : length - 1].float().permute(0, 1, 4, 2, 3)  # [B, L-1, 2, H, W]
    f = torch.cat([f, f[:, -1:]], dim=1)
    big_h, big_w = f.shape[-2:]
    h, w = grid
    f = F.adaptive_avg_pool2d(f.flatten(0, 1), (h, w)).view(b, length, 2, h, w)
    f = f * torch.tensor([w / big_w, h / big_h]).view(1, 1, 2, 1, 1) * float(scale)
    if flip is not None and bool(flip.any()):
        f[flip] = f[flip].flip(-1) * torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)
    return f


@torch.no_grad()
def grow_flow_channels(unet, latent_channels: int, flow_channels: int):
    """The same UNet with `flow_channels` more noisy-input channels (after the appearance latents, before the
    conditioning ones; zero weights) and output channels (random rows): its appearance prediction is unchanged."""
    c, m = int(latent_channels), int(flow_channels)
    old_in, old_out = unet.conv_in, unet.conv_out
    have = old_out.out_channels - c
    if have == m:
        return unet
    if have != 0 or old_in.in_channels != 2 * c:
        raise UserError(f"i2v: can only add flow channels to an appearance-only UNet (in {2 * c}, out {c}); this one has "
                        f"in {old_in.in_channels}, out {old_out.out_channels}")
    new_in = nn.Conv2d(2 * c + m, old_in.out_channels, old_in.kernel_size, padding=old_in.padding).to(old_in.weight)
    new_in.weight.zero_()
    new_in.weight[:, :c] = old_in.weight[:, :c]
    new_in.weight[:, c + m :] = old_in.weight[:, c:]
    new_in.bias.copy_(old_in.bias)
    new_out = nn.Conv2d(old_out.in_channels, c + m, old_out.kernel_size, padding=old_out.padding).to(old_out.weight)
    new_out.bias.zero_()
    new_out.weight.normal_(0.0, float(old_out.weight.std()), generator=torch.Generator().manual_seed(0))
    new_out.weight[:c] = old_out.weight
    new_out.bias[:c] = old_out.bias
    unet.conv_in, unet.conv_out = new_in, new_out
    unet.register_to_config(in_channels=2 * c + m, out_channels=c + m)
    return unet
