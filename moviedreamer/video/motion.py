"""Joint appearance-motion denoising (VideoJAM): the UNet also denoises the clip's optical flow.

The flow of each frame (frame t -> t + 1; the last frame repeats the one before) is drawn as an RGB image on the
standard colour wheel (hue = direction, saturation = speed, full at `flow_max` x the frame width per frame; still
pixels are white) and encoded by the same VAE as the frames, so the motion lives in the appearance's own latent
space: with `flow_channels` m = the VAE's latent channels, the UNet's noisy input is [appearance latents (C) ; flow
latents (m)] per frame, followed by the conditioning latents, and it predicts v for both (out_channels = C + m).
Training adds `flow_weight` x the flow's v-MSE to the loss, so the model has to know where things move and the
appearance it draws shares that representation (VideoJAM's argument: a pixel-only loss hardly rewards motion).
With probability `flow_input_drop` the noisy flow input is zeroed in training: the model then predicts the motion
from the appearance alone, which is the second branch Inner-Guidance needs at sampling (video/sampler.py):

    v = v(x, y, d) + (g - 1) (v(x, y, d) - v(x, null, d)) + w (v(x, y, d) - v(x, y, null))

for the first `inner_guidance_share` of the steps: the model's own motion prediction steers the appearance.

`grow_flow_channels` turns an appearance-only UNet (e.g. SVD's) into a joint one without changing what it draws:
the new input channels' weights start at zero, the new output rows at random (as large as the appearance rows).
Zero output rows would pass no gradient of the flow loss back into the network, which then learns the flow only
through a linear readout of its last features.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from moviedreamer.errors import UserError


def flow_image(flow: np.ndarray | torch.Tensor, flow_max: float) -> torch.Tensor:
    """Forward flow [N, H, W, 2] (pixels, x and y) -> its colour-wheel picture [N, 3, H, W] in [-1, 1]: hue the
    direction, saturation the speed (1 at `flow_max` x the width per frame), value 1."""
    f = np.asarray(flow.float().cpu() if isinstance(flow, torch.Tensor) else flow, dtype=np.float32)
    out = np.empty((*f.shape[:3], 3), np.float32)
    full = max(1e-6, float(flow_max) * f.shape[2])
    for i in range(len(f)):
        mag, ang = cv2.cartToPolar(f[i, ..., 0], f[i, ..., 1], angleInDegrees=True)
        hsv = np.stack([ang, np.clip(mag / full, 0.0, 1.0), np.ones_like(mag)], axis=-1)
        out[i] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return torch.from_numpy(out).permute(0, 3, 1, 2) * 2 - 1


def image_flow(picture: torch.Tensor, flow_max: float, floor: float = 0.05) -> torch.Tensor:
    """The inverse of `flow_image`: colour-wheel pictures [N, 3, H, W] in [-1, 1] -> forward flow [N, H, W, 2]
    (pixels). Saturation below `floor` reads as still: a decoded picture is never exactly white."""
    rgb = ((picture.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty((*rgb.shape[:3], 2), np.float32)
    full = float(flow_max) * rgb.shape[2]
    for i in range(len(rgb)):
        hsv = cv2.cvtColor(np.ascontiguousarray(rgb[i]), cv2.COLOR_RGB2HSV)
        sat = np.where(hsv[..., 1] < floor, 0.0, hsv[..., 1])
        x, y = cv2.polarToCart(sat * full, hsv[..., 0].astype(np.float32), angleInDegrees=True)
        out[i, ..., 0], out[i, ..., 1] = x, y
    return torch.from_numpy(out)


def per_frame_flow(flow: torch.Tensor, length: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """The shards' forward flow [B, >= length - 1, H, W, 2] -> one field per frame [B, length, H, W, 2]: frame t
    gets t -> t + 1, the last frame the one before it; rows with `flip` [B] mirrored (x negated) like their frames."""
    if length < 2:
        raise UserError(f"i2v flow targets: a window of {length} frame(s); at least 2 are needed")
    if flow.shape[1] < length - 1:
        raise UserError(f"i2v flow targets: {flow.shape[1]} flow fields for a window of {length} frames (expected {length - 1})")
    f = flow[:, : length - 1].float()
    f = torch.cat([f, f[:, -1:]], dim=1)
    if flip is not None and bool(flip.any()):
        f[flip] = f[flip].flip(-2) * torch.tensor([-1.0, 1.0])
    return f


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Flow fields [N, H, W, 2] at another frame size (width, height): area-resampled, in the new size's pixels."""
    w, h = size
    if flow.shape[1:3] == (h, w):
        return flow
    f = F.interpolate(flow.permute(0, 3, 1, 2), size=(h, w), mode="area" if w < flow.shape[2] else "bilinear")
    return (f * torch.tensor([w / flow.shape[2], h / flow.shape[1]]).view(1, 2, 1, 1)).permute(0, 2, 3, 1)


@torch.no_grad()
def flow_latents(vae, flow: torch.Tensor, length: int, flow_max: float, flip: torch.Tensor | None = None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
    """The flow channels' clean targets [B, length, C, h, w]: each frame's flow picture (at the frames' `size`,
    width and height), VAE-encoded (scaled)."""
    from moviedreamer.video.conditioning import encode_latents

    f = per_frame_flow(flow, length, flip).flatten(0, 1)
    if size is not None:
        f = resize_flow(f, size)
    z = encode_latents(vae, flow_image(f, flow_max))
    return z.view(-1, length, *z.shape[1:])


@torch.no_grad()
def grow_flow_channels(unet, latent_channels: int, flow_channels: int, anchor: bool = False):
    """The same UNet with `flow_channels` more noisy-input channels (after the appearance latents, before the
    conditioning ones; zero weights) and output channels (random rows): its appearance prediction is unchanged.
    `anchor`: the UNet also takes the anchor latents (in_channels 3 C)."""
    c, m = int(latent_channels), int(flow_channels)
    old_in, old_out = unet.conv_in, unet.conv_out
    have = old_out.out_channels - c
    if have == m:
        return unet
    extra = c if anchor else 0
    if have != 0 or old_in.in_channels != 2 * c + extra:
        raise UserError(f"i2v: can only add flow channels to an appearance-only UNet (in {2 * c + extra}, out {c}); this one has "
                        f"in {old_in.in_channels}, out {old_out.out_channels}")
    new_in = nn.Conv2d(old_in.in_channels + m, old_in.out_channels, old_in.kernel_size, padding=old_in.padding).to(old_in.weight)
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
    unet.register_to_config(in_channels=old_in.in_channels + m, out_channels=c + m)
    return unet


@torch.no_grad()
def grow_anchor_channels(unet, latent_channels: int):
    """The same UNet taking the anchor (keyframe) latents too, after the conditioning latents, with zero weights:
    what it draws is unchanged until training teaches it to look."""
    c = int(latent_channels)
    old_in = unet.conv_in
    new_in = nn.Conv2d(old_in.in_channels + c, old_in.out_channels, old_in.kernel_size, padding=old_in.padding).to(old_in.weight)
    new_in.weight.zero_()
    new_in.weight[:, : old_in.in_channels] = old_in.weight
    new_in.bias.copy_(old_in.bias)
    unet.conv_in = new_in
    unet.register_to_config(in_channels=old_in.in_channels + c)
    return unet
