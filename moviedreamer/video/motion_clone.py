"""MotionClone: a shot moves like a reference clip, with no training (training-free motion transfer).

The motion representation is the I2V UNet's own temporal self-attention: at every temporal transformer block, each
spatial position attends over the segment's frames, and an F x F map per position and head says which frames it
draws from, i.e. how content flows through time there. MotionClone's observation is that the dominant entries of
those maps carry the motion and the rest is noise or subtle motion; so only the top-k entries per (position, head,
query frame) are kept as a mask M, and sampling is guided to reproduce them:

    E(x) = sum over layers l of  sum(w * M_l * (A_l(x) - R_l)^2) / sum(w * M_l)
    D'(x; sigma) = D(x; sigma) - clone_weight * sigma * grad_x E / rms(grad_x E)       (first clone_share of the steps)

with A_l the sample's maps, R_l the reference's (read at one noise level `clone_sigma`), w a per-position weight
(location-aware, below). D' is turned back into the v the scheduler takes: v' = v + clone_weight * sqrt(sigma^2 + 1)
* grad / rms(grad). A normalised gradient step keeps `clone_weight` in noise units, whatever the maps' scale.

Reading R (`clone_mode`):
    "inversion"  the reference's latents run backwards along the sampler's ODE (Euler, an empty condition: the null
                 row classifier-free guidance uses) from the smallest sigma to `clone_sigma`, then one UNet pass;
    "one-step"   the reference's latents noised to `clone_sigma` with fresh noise, one UNet pass (MotionClone's later
                 version: no inversion). Cheaper; `bench/bench_motion_clone.py` measures both.

Location-aware: the maps are positional, but the shot's subject is not where the reference's is (another character,
another scene; in an image-to-video model the keyframe fixes the layout, so the layout cannot be steered to the
reference's as MotionClone's text-to-video semantic guidance does). A rough foreground mask of each — the reference
and the keyframe — is read from the UNet's spatial cross-attention (the share of attention a position gives the
keyframe's image token, above its mean), and the reference's maps are moved by the offset between the two masks'
centres before they are compared; positions in the shot's foreground weigh 1, the rest `clone_background`.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor
from safetensors.torch import load_file, save_file

from moviedreamer.errors import UserError

MODES = ("one-step", "inversion")


# ---------------------------------------------------------------------------------------------------- attention taps


def attention_layers(unet, kind: str) -> dict[str, torch.nn.Module]:
    """The UNet's attention modules of one kind: "temporal" (self-attention over frames, per position) or "cross"
    (the spatial blocks' cross-attention to the conditioning tokens)."""
    if kind not in ("temporal", "cross"):
        raise ValueError(f"attention kind must be 'temporal' or 'cross', found {kind!r}")
    out = {}
    for name, module in unet.named_modules():
        if kind == "temporal" and name.endswith("temporal_transformer_blocks.0.attn1"):
            out[name] = module
        elif kind == "cross" and name.endswith("attn2") and ".transformer_blocks." in name and "temporal" not in name:
            out[name] = module
    return out


@contextlib.contextmanager
def tap_attention(unet, kind: str, sink: Callable[[str, torch.Tensor], None]):
    """Within the block, every attention of `kind` runs diffusers' plain `AttnProcessor` (explicit probabilities,
    so gradients flow through them) and hands its probabilities [batch * heads, queries, keys] to `sink(name, p)`."""
    layers = attention_layers(unet, kind)
    saved = {}
    for name, attn in layers.items():
        saved[name] = attn.processor
        original = attn.get_attention_scores

        def scores(query, key, attention_mask=None, _name=name, _original=original):
            p = _original(query, key, attention_mask)
            sink(_name, p)
            return p

        attn.get_attention_scores = scores  # an instance attribute shadows the method; removed on exit
        attn.set_processor(AttnProcessor())
    try:
        yield layers
    finally:
        for name, attn in layers.items():
            del attn.get_attention_scores
            attn.set_processor(saved[name])


def relative_to_first(x0: torch.Tensor, model) -> torch.Tensor:
    """Clip latents [1, L, C (+ flow), h, w] as the model denoises them: a residual model (I2VSettings.residual) sees
    each frame's appearance minus the first frame's."""
    if not model.settings.residual:
        return x0
    c = model.latent_channels
    out = x0.clone()
    out[:, :, :c] = x0[:, :, :c] - x0[:, :1, :c]
    return out


def top_k_mask(maps: torch.Tensor, k: int) -> torch.Tensor:
    """True on the k largest entries over the last dim (the key frames) of each query row: the dominant motion."""
    k = max(1, min(int(k), maps.shape[-1]))
    idx = maps.topk(k, dim=-1).indices
    return torch.zeros_like(maps, dtype=torch.bool).scatter_(-1, idx, True)


# ---------------------------------------------------------------------------------------------------- the reference


def resample_clip(frames: np.ndarray, src_fps: float, n_frames: int, fps: float, size: tuple[int, int]) -> np.ndarray:
    """A reference clip [N, H, W, 3] uint8 at the shot's frame rate, length and size (width, height): frame i is the
    source frame nearest in time to i / fps; a shorter reference holds its last frame."""
    if len(frames) == 0:
        raise UserError("motion reference: the clip has no frames")
    idx = np.minimum(np.round(np.arange(n_frames) * float(src_fps) / float(fps)).astype(int), len(frames) - 1)
    w, h = size
    out = [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames[idx]]
    return np.stack(out)


def farneback_flow(frames: np.ndarray) -> torch.Tensor:
    """Forward optical flow between consecutive frames [N, H, W, 3] uint8 -> [N - 1, H, W, 2] pixels (OpenCV's
    Farneback): the joint model's motion channels for a clip whose true flow nobody knows."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    flows = [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0) for a, b in zip(grey[:-1], grey[1:])]
    return torch.from_numpy(np.stack(flows)) if flows else torch.zeros((0, *frames.shape[1:3], 2))


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class SegmentMotion:
    """The reference's motion for one segment: dominant temporal-attention maps per layer and where it moves."""

    maps: dict[str, torch.Tensor]  # layer -> [S, heads, F, F] reference probabilities
    foreground: torch.Tensor  # [h, w] in [0, 1] at the latent resolution: the reference's rough foreground

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}/maps/{k}": v.contiguous() for k, v in self.maps.items()}
        out[f"{prefix}/foreground"] = self.foreground.contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> "SegmentMotion":
        maps = {k[len(prefix) + 6 :]: v for k, v in tensors.items() if k.startswith(prefix + "/maps/")}
        return cls(maps, tensors[prefix + "/foreground"])


def foreground_mask(cross: dict[str, torch.Tensor], frames: int, size: tuple[int, int]) -> torch.Tensor:
    """A rough foreground [h, w] from cross-attention probabilities {layer: [B * F * heads, S, N]} of one row: the
    share of attention each position gives token 0 (the keyframe's image), averaged over frames, heads and layers at
    the latent size (h, w), 1 where above its mean."""
    h, w = size
    acc = torch.zeros(h, w)
    for p in cross.values():
        s = p.shape[1]
        side = int(round((s * w / h) ** 0.5))
        a = p[..., 0].float().reshape(-1, s).mean(0).view(s // side, side)
        acc += F.interpolate(a[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    acc = acc / max(1, len(cross))
    return (acc > acc.mean()).float()


def centre(mask: torch.Tensor) -> tuple[float, float] | None:
    """Centre (row, column) of a [h, w] mask; None when it is empty or everything."""
    total = float(mask.sum())
    if total == 0 or total == mask.numel():
        return None
    ys, xs = torch.meshgrid(torch.arange(mask.shape[0]).float(), torch.arange(mask.shape[1]).float(), indexing="ij")
    return float((ys * mask).sum() / total), float((xs * mask).sum() / total)


def shift_maps(maps: torch.Tensor, side: tuple[int, int], dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference maps [S, heads, F, F] on a grid `side` (h, w) moved by (dy, dx) positions; returns the moved maps and
    a [S] validity mask (positions that came from outside the grid are invalid)."""
    h, w = side
    grid = maps.view(h, w, *maps.shape[1:])
    out = torch.zeros_like(grid)
    valid = torch.zeros(h, w)
    ys, yd = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    xs, xd = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[yd, xd] = grid[ys, xs]
    valid[yd, xd] = 1.0
    return out.view_as(maps), valid.view(-1)


# ---------------------------------------------------------------------------------------------------- reading and guiding


class MotionCloner:
    """Reads a reference clip's motion with a sampler's own UNet (cached by file content) and guides its segments.

    `sampler` is a video.sampler.AnchoredSampler: its model, VAE and vision encoder are used as they are."""

    def __init__(self, sampler, cache_dir: str | Path | None = None):
        self.sampler, self.model = sampler, sampler.model
        self.cache_dir = Path(cache_dir) if cache_dir else None

    # -------------------------------------------------------------------------- UNet passes

    def _null(self, length: int, latents: torch.Tensor):
        m = self.model
        c = m.latent_channels * (2 if m.settings.anchor_latent else 1)
        cond = torch.zeros((1, length, c, *latents.shape[-2:]), dtype=m.dtype, device=self.sampler.device)
        dim = m.conditioning.config.cross_attention_dim
        tokens = torch.zeros((1, m.tokens(torch.zeros(1, m.conditioning.config.image_embed_dim, device=self.sampler.device)).shape[1], dim),
                             dtype=m.dtype, device=self.sampler.device)
        return cond, tokens

    def _ids(self, s) -> torch.Tensor:
        from moviedreamer.video.model import time_ids
        return time_ids(s.fps, s.motion_bucket, s.noise_aug).to(self.sampler.device, self.model.dtype)

    def _sigmas(self, s) -> torch.Tensor:
        sched = self.sampler.scheduler
        sched.set_timesteps(s.steps)
        return sched.sigmas.float()

    @torch.no_grad()
    def invert(self, x0: torch.Tensor, sigma: float, s) -> torch.Tensor:
        """The clean latents [1, L, C (+ flow), h, w] carried up the sampler's ODE to `sigma` (Euler, the empty
        condition): the noisy latents the model itself would have denoised into x0."""
        cond, tokens = self._null(x0.shape[1], x0)
        ids = self._ids(s)
        sigmas = [float(v) for v in self._sigmas(s) if float(v) > 0]
        prev = min(sigmas)  # the clean latents are taken as the sample at the grid's smallest sigma
        x = x0.clone().float()
        for nxt in sorted({v for v in sigmas if prev < v < sigma} | {sigma}):
            d = self.model.denoise(x.to(self.model.dtype), torch.tensor([prev], device=x.device), cond, tokens, ids).float()
            x = x + (nxt - prev) * (x - d) / prev
            prev = nxt
        return x

    def read_maps(self, x: torch.Tensor, sigma: float, s) -> dict[str, torch.Tensor]:
        """The temporal attention maps {layer: [S, heads, L, L]} of one null-conditioned pass on noisy latents x."""
        cond, tokens = self._null(x.shape[1], x)
        got = {}
        layers = attention_layers(self.model.unet, "temporal")
        with torch.no_grad(), tap_attention(self.model.unet, "temporal", lambda n, p: got.__setitem__(n, p.detach().float().cpu())):
            self.model.predict_v(x.to(self.model.dtype), torch.tensor([sigma], device=x.device), cond, tokens, self._ids(s))
        return {n: p.reshape(-1, layers[n].heads, x.shape[1], x.shape[1]) for n, p in got.items()}

    @torch.no_grad()
    def foreground(self, x0: torch.Tensor, first_pixels: torch.Tensor, sigma: float, s, seed: int) -> torch.Tensor:
        """A rough foreground [h, w] of a clip's latents [1, L, C (+ flow), h, w]: its cross-attention to the image
        token of its own first frame, conditioned like a shot starting there."""
        m, sf = self.model, float(self.sampler.vae.config.scaling_factor)
        length = x0.shape[1]
        first = x0[:, 0, : m.latent_channels] / sf
        x0 = relative_to_first(x0, m)
        cond = first[:, None].expand(-1, length, -1, -1, -1)
        if m.settings.anchor_latent:
            cond = torch.cat([cond, cond], dim=2)
        tokens = m.tokens(self.sampler.image_embeds(first_pixels).to(x0.device))
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0.device)
        got = {}
        with tap_attention(m.unet, "cross", lambda n, p: got.__setitem__(n, p.float().cpu())):
            m.predict_v((x0 + sigma * noise).to(m.dtype), torch.tensor([sigma], device=x0.device), cond.to(m.dtype), tokens, self._ids(s))
        return foreground_mask(got, length, tuple(x0.shape[-2:]))

    # -------------------------------------------------------------------------- the reference, segment by segment

    def reference(self, path: str | Path, n_frames: int, fps: float, size: tuple[int, int], plans: list[tuple[int, int]], s,
                  seed: int = 0) -> list[SegmentMotion]:
        """The reference clip's motion for each segment (start, length) of a shot of n_frames at fps and size (width,
        height); cached by the file's content and everything the maps depend on."""
        from moviedreamer.media import frame_rate, read_frames
        from moviedreamer.video.conditioning import encode_latents, to_pixels
        from moviedreamer.video.motion import flow_latents

        vae, m = self.sampler.vae, self.model
        weights = getattr(self.sampler, "weights_fingerprint", "") or sum(float(p.float().sum()) for p in m.unet.parameters())
        key = hashlib.sha256(repr((file_digest(path), n_frames, float(fps), size, plans, s.clone_mode, float(s.clone_sigma), s.steps,
                                   seed, weights, m.settings.residual)).encode()).hexdigest()[:24]
        cached = self.cache_dir / f"{key}.safetensors" if self.cache_dir else None
        if cached is not None and cached.exists():
            tensors = load_file(str(cached))
            return [SegmentMotion.from_tensors(tensors, str(i)) for i in range(len(plans))]
        try:
            frames = np.stack(list(read_frames(path)))
            src_fps = frame_rate(path, fps)
        except Exception as e:  # noqa: BLE001 - validate checks the file first; this names it if it changed since
            raise UserError(f"motion reference {path}: cannot read it as a video ({type(e).__name__}: {str(e)[:120]})") from e
        clip = resample_clip(frames, src_fps, n_frames, fps, size)
        pixels = to_pixels(clip)
        z = encode_latents(vae, pixels).cpu()
        if m.settings.flow_channels:
            flow = farneback_flow(clip)
            flow = torch.cat([flow, flow[-1:]]) if len(flow) else torch.zeros((n_frames, size[1], size[0], 2))
            z = torch.cat([z, flow_latents(vae, flow[None], n_frames, m.settings.flow_max)[0].cpu()], dim=1)
        out = []
        for i, (start, length) in enumerate(plans):
            x0 = z[start : start + length][None].to(self.sampler.device)
            sigma = float(s.clone_sigma)
            if s.clone_mode == "inversion":
                x = self.invert(relative_to_first(x0, m), sigma, s)
            else:
                x = relative_to_first(x0, m) + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + i)).to(x0.device)
            maps = {k: v.half() for k, v in self.read_maps(x, sigma, s).items()}
            out.append(SegmentMotion(maps, self.foreground(x0, pixels[start : start + 1], sigma, s, seed + i)))
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tensors = {}
            for i, seg in enumerate(out):
                tensors.update(seg.to_tensors(str(i)))
            tmp = cached.with_suffix(".tmp")
            save_file(tensors, str(tmp))
            tmp.replace(cached)
        return out

    # -------------------------------------------------------------------------- guidance

    def targets(self, motion: SegmentMotion, shot_foreground: torch.Tensor, background: float, top_k: int) -> dict:
        """Per layer: the reference maps moved onto the shot's foreground, and the weights of the energy (top-k mask x
        position weight x validity)."""
        layers = attention_layers(self.model.unet, "temporal")
        a, b = centre(motion.foreground), centre(shot_foreground)
        h0, w0 = shot_foreground.shape
        out = {}
        for name, ref in motion.maps.items():
            s_count = ref.shape[0]
            side = int(round((s_count * w0 / h0) ** 0.5))
            grid = (s_count // side, side)
            dy = int(round((b[0] - a[0]) * grid[0] / h0)) if a and b else 0
            dx = int(round((b[1] - a[1]) * grid[1] / w0)) if a and b else 0
            moved, valid = shift_maps(ref.float(), grid, dy, dx)
            pos = F.interpolate(shot_foreground[None, None], size=grid, mode="bilinear", align_corners=False).view(-1)
            pos = (background + (1 - background) * pos) * valid
            weight = top_k_mask(moved, top_k).float() * pos.view(-1, 1, 1, 1)
            out[name] = (moved, weight, layers[name].heads)
        return out

    def adjust(self, v: torch.Tensor, lat: torch.Tensor, concat: torch.Tensor, t, sigma: float, tokens, ids, targets: dict,
               weight: float) -> torch.Tensor:
        """v after one primary temporal-attention guidance step: the energy's normalised gradient at the sampler's
        latents `lat` [1, L, C (+ flow), h, w] (see the module docstring)."""
        m = self.model
        got = {}
        with torch.enable_grad(), tap_attention(m.unet, "temporal", lambda n, p: got.__setitem__(n, p)):
            x = lat.detach().float().requires_grad_(True)
            m.unet_forward((x / (sigma**2 + 1) ** 0.5).to(m.dtype), concat, t, tokens, ids)
            energy = clone_energy(got, targets, lat.shape[1])
            (grad,) = torch.autograd.grad(energy, x)
        grad = grad / grad.pow(2).mean().sqrt().clamp_min(1e-12)
        return v + weight * (sigma**2 + 1) ** 0.5 * grad.to(v)


def clone_energy(maps: dict[str, torch.Tensor], targets: dict, frames: int) -> torch.Tensor:
    """sum over layers of the weighted squared distance between the sample's temporal maps and the reference's."""
    total = 0.0
    for name, (ref, weight, heads) in targets.items():
        a = maps[name].reshape(-1, heads, frames, frames).float()
        ref, weight = ref.to(a.device), weight.to(a.device)
        total = total + (weight * (a - ref) ** 2).sum() / weight.sum().clamp_min(1e-12)
    return total
