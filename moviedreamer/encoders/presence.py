"""Which of the story's characters does a frame show, and how many characters are in it?

The best-of-N renderers (keyframes: rerank/identity.py; clips: rerank/segments.py) pick among candidates by detecting
faces and checking the body under each against the character's description. That reads one region at a time: it
cannot see a character drawn without a readable face, and it is fooled by blobs taken for faces. The presence probe
reads the whole frame. It is a small cross-attention probe on the profile's frozen vision encoder (its patch tokens
over a grid of tiles plus the whole frame, so small characters in wide shots cover several patches), queried with a
character's description embedding: p(character shown | frame), for any character a story describes, plus a count
head p(n characters | frame). Trained on the training shards' frames and their scripts' character lists
(`moviedreamer train presence`); the toy judge plays no part in it.

`log_p_exact(frame, looks, cast)`: log p(exactly the given characters among the cast, and as many characters as
given), the rerankers' term.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from moviedreamer.errors import CheckpointError
from moviedreamer.safeio import save_safetensors

FORMAT = "moviedreamer"
COMPONENT = "presence_probe"
VERSION = 1


@dataclass
class PresenceConfig:
    patch_dim: int
    look_dim: int
    width: int = 128
    heads: int = 4
    layers: int = 2
    grid: int = 2  # vision backbone: grid × grid tiles at the encoder's input size, plus the whole frame
    max_count: int = 4
    backbone: str = "vision"  # "vision": the profile's frozen vision encoder; "pixels": a small CNN trained with the probe
    input_size: int = 128  # pixels backbone: frames are resized to this square size
    channels: tuple[int, ...] = (16, 32, 64, 128)  # pixels backbone: one stride-2 stage each (patch_dim = the last)

    def __post_init__(self):
        if self.backbone not in ("vision", "pixels"):
            raise ValueError(f"presence probe backbone must be 'vision' or 'pixels', found {self.backbone!r}")
        self.channels = tuple(int(c) for c in self.channels)
        if self.backbone == "pixels":
            self.patch_dim = self.channels[-1]

    @property
    def views(self) -> int:
        return self.grid * self.grid + 1 if self.backbone == "vision" else 1

    @property
    def tokens(self) -> int:
        """Patch tokens of the pixels backbone (its feature map's cells)."""
        return (self.input_size // 2 ** len(self.channels)) ** 2


def conv_trunk(channels: tuple[int, ...]) -> nn.Sequential:
    """Stride-2 stages of two 3×3 convolutions with GroupNorm (no batch statistics: a frame scores the same alone or in
    a batch) and SiLU."""
    layers, cin = [], 3
    for cout in channels:
        layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU(),
                   nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU()]
        cin = cout
    return nn.Sequential(*layers)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(kv)
        q = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


class PresenceProbe(nn.Module):
    """Character queries (one per description, independent of each other) and one count query cross-attend to the
    frame's patch tokens."""

    def __init__(self, config: PresenceConfig):
        super().__init__()
        self.config = c = config
        self.trunk = conv_trunk(c.channels) if c.backbone == "pixels" else None
        self.patch_in = nn.Linear(c.patch_dim, c.width)
        self.view_embed = nn.Parameter(torch.zeros(c.views, c.width))
        self.pos_embed = nn.Parameter(torch.randn(c.tokens, c.width) * 0.02) if c.backbone == "pixels" else None
        self.look_in = nn.Sequential(nn.Linear(c.look_dim, c.width), nn.GELU(), nn.Linear(c.width, c.width))
        self.count_query = nn.Parameter(torch.randn(c.width) * 0.02)
        # the mean (unit) description of the training stories: descriptions of one world are alike (toy: cosine 0.65-0.92),
        # so the queries are the normalised differences from it; set by the training stage, saved with the weights
        self.register_buffer("look_centre", torch.zeros(c.look_dim))
        self.blocks = nn.ModuleList(_Block(c.width, c.heads) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.width)
        self.present = nn.Linear(c.width, 1)
        self.count = nn.Linear(c.width, c.max_count + 1)

    def forward(self, tokens: torch.Tensor, looks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: views() output (vision: patch tokens [B, V, P, patch_dim]; pixels: frames [B, 3, S, S] in [0, 1]),
        looks [B, M, look_dim] → presence logits [B, M], count logits [B, max_count + 1]."""
        if self.trunk is not None:
            tokens = self.trunk(tokens.float() * 2 - 1).flatten(2).transpose(1, 2)[:, None]  # [B, 1, h·w, C]
        b, v, p, _ = tokens.shape
        kv = self.patch_in(tokens) + self.view_embed[None, :, None]
        if self.pos_embed is not None:
            kv = kv + self.pos_embed[None, None]
        kv = kv.reshape(b, v * p, -1)
        looks = F.normalize(F.normalize(looks.float(), dim=-1) - self.look_centre, dim=-1).to(kv.dtype)
        q = torch.cat([self.count_query.expand(b, 1, -1), self.look_in(looks)], dim=1)
        for block in self.blocks:
            q = block(q, kv)
        q = self.norm(q)
        return self.present(q[:, 1:]).squeeze(-1), self.count(q[:, 0])

    def views(self, vision, frames) -> torch.Tensor:
        """uint8 frames [B, H, W, 3] (or one [H, W, 3]) → the probe's input (vision: the frozen encoder's patch
        tokens; pixels: the frames resized, `vision` unused)."""
        if self.config.backbone == "pixels":
            return frame_pixels(frames, self.config.input_size)
        return frame_views(vision, frames, self.config.grid)

    @torch.no_grad()
    def log_p_exact(self, tokens: torch.Tensor, looks, cast=None) -> torch.Tensor:
        """tokens [B, V, P, D] of B candidate frames of one shot; looks [N, Dd] the shot's characters' descriptions
        (zero rows: no description, left out); cast [M, Dd] every character of the story (the others must be absent).
        → [B]: log p(exactly these characters shown) + log p(count = N)."""
        looks = torch.as_tensor(looks).float().reshape(-1, self.config.look_dim)
        n = len(looks)
        given = looks[looks.abs().sum(-1) > 0]
        others = torch.zeros(0, self.config.look_dim)
        if cast is not None:
            cast = torch.as_tensor(cast).float().reshape(-1, self.config.look_dim)
            cast = cast[cast.abs().sum(-1) > 0]
            if len(given) and len(cast):
                same = (F.normalize(cast, dim=-1) @ F.normalize(given, dim=-1).T).amax(1) > 1 - 1e-5
                cast = cast[~same]
            others = cast
        queries = torch.cat([given, others])
        b = len(tokens)
        if len(queries):
            logits, count = self(tokens, queries[None].expand(b, -1, -1))
        else:
            _, count = self(tokens, torch.zeros(b, 1, self.config.look_dim))
            logits = torch.zeros(b, 0)
        lp = F.logsigmoid(logits[:, : len(given)]).sum(1) + F.logsigmoid(-logits[:, len(given):]).sum(1)
        return lp + F.log_softmax(count, -1)[:, min(n, self.config.max_count)]


def frame_pixels(frames, size: int | None = None) -> torch.Tensor:
    """uint8 [B, H, W, 3] (or [H, W, 3]) → float [B, 3, size, size] in [0, 1] (size None: as they are)."""
    x = torch.as_tensor(np.asarray(frames))
    if x.ndim == 3:
        x = x[None]
    x = x.permute(0, 3, 1, 2).float() / 255
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


@torch.no_grad()
def frame_views(vision, frames, grid: int) -> torch.Tensor:
    """uint8 [B, H, W, 3] (or [H, W, 3]) → the encoder's patch tokens of every view [B, V, P, patch_dim]: the
    grid × grid tiles (each resized to the encoder's input size) and the whole frame."""
    x = frame_pixels(frames)
    b, _, h, w = x.shape
    size = int(getattr(vision, "image_size", 64))
    crops = [x[:, :, i * h // grid:(i + 1) * h // grid, j * w // grid:(j + 1) * w // grid] for i in range(grid) for j in range(grid)] + [x]
    crops = [F.interpolate(c, size=(size, size), mode="bilinear", antialias=True, align_corners=False) for c in crops]
    _, patches = vision.encode_image(torch.stack(crops, 1).reshape(b * len(crops), 3, size, size).clamp(0, 1))
    return patches.float().cpu().reshape(b, len(crops), patches.shape[-2], patches.shape[-1])



class PresenceCheck:
    """The rerankers' presence term: weight · max(log p_exact, floor) / |floor|, in [−weight, 0] (0: the probe is sure
    the frame shows exactly the shot's characters). Several frames of one candidate (a clip): the mean over them."""

    def __init__(self, probe: PresenceProbe, vision, weight: float = 1.0, floor: float = -5.0):
        if floor >= 0:
            raise ValueError(f"presence floor must be negative, found {floor}")
        width = getattr(vision, "width", probe.config.patch_dim)
        if probe.config.backbone == "vision" and width != probe.config.patch_dim:
            raise CheckpointError(f"presence probe: trained on a vision encoder with patch width {probe.config.patch_dim}, "
                                  f"the profile's has {width}; retrain it (`moviedreamer train presence`) for this encoder")
        self.probe, self.vision, self.weight, self.floor = probe, vision, float(weight), float(floor)

    @property
    def fingerprint(self) -> str:
        n = sum(float(p.detach().double().sum()) for p in self.probe.parameters())
        return f"presence:{getattr(self.vision, 'fingerprint', type(self.vision).__name__)}:{n:.6g}:{self.weight}:{self.floor}"

    def term(self, frames, looks, cast=None) -> float:
        """frames: uint8 [H, W, 3] or [T, H, W, 3] of one candidate; looks [N, Dd] the shot's characters'
        descriptions (a zero row: a character without one); cast [M, Dd] the story's."""
        if looks is None:
            return 0.0
        lp = self.probe.log_p_exact(self.probe.views(self.vision, frames), looks, cast)
        return self.weight * float(lp.clamp_min(self.floor).mean()) / -self.floor


def save_presence(probe: PresenceProbe, folder: str | Path, extra: dict | None = None) -> Path:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors({k: v.detach().contiguous() for k, v in probe.state_dict().items()}, out / "model.safetensors")
    config = {"format": FORMAT, "component": COMPONENT, "version": VERSION, "probe": asdict(probe.config), **(extra or {})}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    return out


def load_presence(folder: str | Path) -> PresenceProbe:
    """A presence probe folder (config.json + model.safetensors) → PresenceProbe in eval mode; clear errors."""
    folder = Path(folder)
    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    for path in (cfg_path, weights):
        if not path.is_file():
            raise CheckpointError(f"{folder}: not a presence probe folder (missing {path.name})")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path}: invalid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    if config.get("component") != COMPONENT or config.get("version") != VERSION:
        raise CheckpointError(f"{cfg_path}: expected component {COMPONENT!r} version {VERSION}, found "
                              f"{config.get('component')!r} version {config.get('version')!r}")
    try:
        probe = PresenceProbe(PresenceConfig(**config["probe"]))
        state = load_file(str(weights))
        state.setdefault("look_centre", torch.zeros(probe.config.look_dim))  # probes saved before the centre
        probe.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:  # a truncated file, missing keys, wrong shapes, unknown config keys
        raise CheckpointError(f"{folder}: presence probe does not load: {exc}") from None
    return probe.eval()
