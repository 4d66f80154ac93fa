"""Fairy's anchor-based cross-frame attention, as a diffusers attention processor on a UNet's self-attention layers.

Editing each frame on its own lets every frame settle on its own version of the edit (one frame's red dress is
another's orange one). Fairy's remedy: pick a few anchor frames of the shot and let every frame's self-attention
queries attend to the *anchors'* keys and values instead of its own. Features are then drawn from the same source in
every frame, so the edit propagates identically, and since the anchors' keys/values are fixed per denoising step,
the other frames can be processed in parallel batches of any size, in any order.

Per denoising step the sampler runs the UNet twice over: first on the anchor frames alone with the cache recording
(each anchor attends to all anchors' keys/values, and every `attn1` layer stores them), then on the other frames in
batches with the cache in use (their queries attend to the stored keys/values). The batch of a call is laid out as
`rows` guidance rows one after another, each holding the same number of frames; row r's frames attend to row r's
anchors, so the differently conditioned rows of InstructPix2Pix's guidance never mix.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def pick_anchors(frames: int, k: int) -> list[int]:
    """k anchor frames spread evenly over a shot of `frames` (first and last included when k > 1)."""
    if frames <= 0 or k <= 0:
        return []
    if k >= frames:
        return list(range(frames))
    if k == 1:
        return [frames // 2]
    return sorted({round(i * (frames - 1) / (k - 1)) for i in range(k)})


class AnchorCache:
    """What the processors share: the mode ("record" or "use"), the number of guidance rows in a call's batch, and
    per layer the anchors' keys and values [rows, heads, anchors x tokens, head_dim]."""

    def __init__(self):
        self.mode = "record"
        self.rows = 1
        self.kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def clear(self) -> None:
        self.kv.clear()


class AnchorAttnProcessor:
    """Self-attention whose keys and values come from the anchor frames (see the module docstring)."""

    def __init__(self, cache: AnchorCache, name: str):
        self.cache, self.name = cache, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b4, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(b4, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch, tokens, _ = hidden_states.shape
        rows = self.cache.rows
        if batch % rows:
            raise ValueError(f"anchor attention: a batch of {batch} is not {rows} guidance rows of equal size")
        per_row = batch // rows
        heads = attn.heads
        query = attn.to_q(hidden_states)
        head_dim = query.shape[-1] // heads
        query = query.view(batch, tokens, heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if self.cache.mode == "record":  # this batch holds the anchors: each row's keys/values over all its anchors
            source = hidden_states.reshape(rows, per_row * tokens, -1)
            key = attn.to_k(source).view(rows, per_row * tokens, heads, head_dim).transpose(1, 2)
            value = attn.to_v(source).view(rows, per_row * tokens, heads, head_dim).transpose(1, 2)
            if attn.norm_k is not None:
                key = attn.norm_k(key)
            self.cache.kv[self.name] = (key, value)
        else:
            if self.name not in self.cache.kv:
                raise RuntimeError(f"anchor attention: no anchor keys/values recorded for {self.name} in this step")
            key, value = self.cache.kv[self.name]
            if key.shape[0] != rows:
                raise ValueError(f"anchor attention: anchors recorded with {key.shape[0]} rows, used with {rows}")
        key = key.repeat_interleave(per_row, dim=0)
        value = value.repeat_interleave(per_row, dim=0)
        out = F.scaled_dot_product_attention(query, key.to(query.dtype), value.to(query.dtype), dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, tokens, heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b4, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def self_attention_names(unet) -> list[str]:
    """The processor names of a UNet2DConditionModel's self-attention layers (`...attn1.processor`)."""
    return [name for name in unet.attn_processors if name.endswith("attn1.processor")]


@contextlib.contextmanager
def anchor_attention(unet):
    """Within the block every `attn1` of the UNet runs AnchorAttnProcessor (yields their shared AnchorCache); the
    original processors, whatever they were, are put back on exit, also after an error."""
    saved = dict(unet.attn_processors)
    cache = AnchorCache()
    names = self_attention_names(unet)
    if not names:
        raise ValueError("anchor attention: the UNet has no self-attention layers (attn1)")
    unet.set_attn_processor({n: AnchorAttnProcessor(cache, n) if n in names else p for n, p in saved.items()})
    try:
        yield cache
    finally:
        cache.clear()
        unet.set_attn_processor(saved)


__all__ = ["AnchorAttnProcessor", "AnchorCache", "anchor_attention", "pick_anchors", "self_attention_names"]
