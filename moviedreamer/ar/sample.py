"""Shot-by-shot sampling with a rolling-window KV cache, and the pipeline's `Planner`.

Context = [prefix: character sheet (+ reference frames)] + [the last `window_shots` shots]. The prefix is
computed once and stays pinned. Each shot costs two kinds of forward pass over only its new elements — (the previous
shot's last keyframe token + this shot's script + [KF]), then each keyframe token but the last — against the cached
keys/values; nothing already cached is recomputed.

When a shot would exceed the window (or the position budget, `max_position_embeddings`), the oldest shot leaves:
its keys/values are cut out of every layer and the keys after it are re-rotated by -Δ (Δ = its length). RoPE is a
rotation by position·θ, so rotating a cached key by -Δθ gives exactly the key that position - Δ would have had;
window-to-window relative positions are unchanged, the prefix keeps positions 0..P-1, and a cached element's RoPE
position always equals its index in the compacted cache. Positions therefore never exceed
P + (window tokens) < max_position_embeddings, and time and memory per shot stay flat however long the movie.

`use_cache=False` recomputes the whole context (prefix + window) from scratch for every prediction: the reference
for the cache (identical tokens while nothing has left the window; afterwards the cached keys of the remaining
shots still carry what they saw when they were computed, as in any streaming cache) and the slow side of
bench/bench_ar.py.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch

from moviedreamer.ar.embed import Part, keyframe_part, prefix_part, shot_part
from moviedreamer.ar.gmm import gmm_sample
from moviedreamer.ar.model import ARModel
from moviedreamer.encoders.cache import fingerprint_files
from moviedreamer.errors import UserError


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rerotate(keys: torch.Tensor, delta: int, inv_freq: torch.Tensor) -> torch.Tensor:
    """RoPE-rotated keys [..., S, head_dim] moved by -delta positions (a pure rotation, computed in float32)."""
    angle = -float(delta) * inv_freq.float().to(keys.device)
    emb = torch.cat((angle, angle))
    k = keys.float()
    return (k * emb.cos() + rotate_half(k) * emb.sin()).to(keys.dtype)


@dataclass
class _Shot:
    cached: int = 0  # elements of this shot already in the context
    parts: list = field(default_factory=list)  # (recompute mode) what was fed


class RollingSampler:
    """Samples keyframe tokens shot by shot. `reset(prefix)`, then `step(script_part, seed)` per shot."""

    def __init__(self, model, window_shots: int | None = None, use_cache: bool = True, temperature: float | None = None,
                 max_positions: int | None = None):
        self.model = model.eval()
        cfg = model.backbone.config
        self.window = int(window_shots or model.config.window_shots)
        if self.window < 1:
            raise UserError(f"window_shots must be at least 1, found {self.window}")
        self.use_cache = use_cache
        self.temperature = model.config.temperature if temperature is None else float(temperature)
        self.max_positions = int(max_positions or cfg.max_position_embeddings)
        rope = (getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}) or {}
        if rope.get("rope_type", rope.get("type", "default")) == "dynamic":
            raise UserError("the rolling KV cache re-rotates cached keys, which needs fixed RoPE frequencies: 'dynamic' rope scaling is not supported")
        self.inv_freq = model.backbone.rotary_emb.inv_freq
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        if 2 * self.inv_freq.numel() != head_dim:
            raise UserError(f"the rolling KV cache re-rotates whole heads: expected RoPE over all {head_dim} head dimensions, found {2 * self.inv_freq.numel()}")
        self.prefix: Part | None = None

    @property
    def device(self):
        return self.model.type_emb.weight.device

    # --- state -----------------------------------------------------------------------------------------------
    def reset(self, prefix: Part) -> None:
        # transformers is heavy: loaded only on the paths that read HF folders
        from transformers import DynamicCache

        self.prefix, self.P = prefix, len(prefix)
        self.shots: deque[_Shot] = deque()
        self.pending: Part | None = None  # the previous shot's last keyframe token, fed with the next chunk
        self.window_len = 0  # elements of shots in the context
        self.max_position_seen = -1
        self.evicted = 0
        self.cache = DynamicCache(config=self.model.backbone.config) if self.use_cache else None
        if self.P + 1 > self.max_positions:
            raise UserError(f"the character sheet and references take {self.P} positions, more than the backbone's "
                            f"max_position_embeddings {self.max_positions}: fewer faces/references, or a longer-context backbone")
        if self.use_cache:
            self._forward(prefix)

    @property
    def cache_length(self) -> int:
        return self.cache.get_seq_length() if self.cache is not None else self.P + self.window_len

    # --- one shot ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, script: Part, seed: int, tokens: torch.Tensor | None = None, temperature: float | None = None) -> torch.Tensor:
        """Sample (or, with `tokens`, teacher-force) the keyframe tokens [n_tokens, d] of the next shot."""
        if self.prefix is None:
            raise RuntimeError("RollingSampler.step before reset")
        n = self.model.config.n_tokens
        temperature = self.temperature if temperature is None else temperature
        gen = torch.Generator().manual_seed(int(seed) % (2**63 - 1))
        pending, self.pending = self.pending, None
        self._make_room((len(pending) if pending is not None else 0) + len(script) + n - 1)
        chunk = [(pending, self.shots[-1])] if pending is not None and self.shots else []  # (its shot may have left the window)
        self.shots.append(_Shot())
        h = self._feed(chunk + [(script, self.shots[-1])])
        out = []
        for j in range(n):
            if tokens is None:
                x = self.model.denormalize(gmm_sample(self.model.predict(h), temperature, gen)).cpu()
            else:
                x = tokens[j].detach().float().cpu()
            out.append(x)
            kp = keyframe_part(x[None], shot=-1, target=False)
            kp.types += j  # slot j's type
            if j < n - 1:
                h = self._feed([(kp, self.shots[-1])])
            else:
                self.pending = kp
        return torch.stack(out)

    def _make_room(self, incoming: int) -> None:
        while self.shots and (len(self.shots) >= self.window or self.P + self.window_len + incoming > self.max_positions):
            self._evict()
        if self.P + self.window_len + incoming > self.max_positions:
            raise UserError(f"one shot ({incoming} elements) does not fit after the prefix ({self.P}) within max_position_embeddings {self.max_positions}")

    def _evict(self) -> None:
        shot = self.shots.popleft()
        self.evicted += 1
        n = shot.cached
        if n and self.cache is not None:
            P = self.P
            for layer in self.cache.layers:
                k, v = layer.keys, layer.values
                layer.keys = torch.cat([k[..., :P, :], rerotate(k[..., P + n :, :], n, self.inv_freq)], dim=-2)
                layer.values = torch.cat([v[..., :P, :], v[..., P + n :, :]], dim=-2)
        self.window_len -= n

    def _feed(self, pieces: list[tuple[Part, _Shot]]) -> torch.Tensor:
        """Add parts to the context in one forward pass, each as part of its shot; returns the last element's
        hidden state [H]."""
        part = pieces[0][0] if len(pieces) == 1 else Part.cat([p for p, _ in pieces])
        if self.cache is not None:
            h = self._forward(part)
        for p, shot in pieces:
            shot.cached += len(p)
            shot.parts += [] if self.cache is not None else [p]
            self.window_len += len(p)
        if self.cache is None:
            whole = Part.cat([self.prefix] + [p for s in self.shots for p in s.parts])
            h = self._run(whole, 0)
            self.max_position_seen = max(self.max_position_seen, len(whole) - 1)
        return h[-1]

    def _forward(self, part: Part) -> torch.Tensor:
        past = self.cache.get_seq_length()
        h = self._run(part, past, self.cache)
        self.max_position_seen = max(self.max_position_seen, past + len(part) - 1)
        return h

    def _run(self, part: Part, past: int, cache=None) -> torch.Tensor:
        n = len(part)
        emb = self.model.embed(part).unsqueeze(0)
        allowed = torch.ones(n, past + n, dtype=torch.bool, device=emb.device)
        allowed[:, past:] = torch.ones(n, n, dtype=torch.bool, device=emb.device).tril()
        pos = torch.arange(past, past + n, device=emb.device).unsqueeze(0)
        return self.model.run_backbone(emb, allowed[None, None], pos, cache)[0]


class ARPlanner:
    """The pipeline's `Planner` (moviedreamer/pipeline/components.py) over an AR model: `reset(encoded)` pins the
    sheet and references (`encoded.sheet`: embed.Sheet, `encoded.shots`: [embed.ShotScript], `encoded.references`:
    tokens [R, n_tokens, d] or None); `step(i, seed, tokens=None)` plans shot i (shots come in order from 0)."""

    def __init__(self, model, device: str | torch.device = "cpu", window_shots: int | None = None, temperature: float | None = None,
                 use_cache: bool = True, fingerprint: str = ""):
        self.model = model.to(device).eval()
        self.sampler = RollingSampler(self.model, window_shots, use_cache, temperature)
        self.fingerprint = fingerprint or f"ar-unsaved-{id(model):x}"
        self.encoded, self.next_shot = None, 0

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype: torch.dtype | None = None, **kw) -> "ARPlanner":
        model = ARModel.from_pretrained(path, device, dtype)
        settings = f"ar|{kw.get('window_shots')}|{kw.get('temperature')}|{dtype}"
        return cls(model, device, fingerprint=fingerprint_files([Path(path) / "config.json", Path(path) / "model.safetensors"], settings), **kw)

    def reset(self, encoded) -> None:
        self.encoded, self.next_shot = encoded, 0
        self.sampler.reset(prefix_part(encoded.sheet, getattr(encoded, "references", None)))

    def step(self, shot_index: int, seed: int, tokens=None) -> torch.Tensor:
        if self.encoded is None:
            raise RuntimeError("ARPlanner.step before reset")
        if shot_index != self.next_shot:
            raise ValueError(f"the AR planner plans shots in order: expected shot {self.next_shot}, got {shot_index}")
        self.next_shot += 1
        return self.sampler.step(shot_part(self.encoded.shots[shot_index], shot_index), seed, tokens)
