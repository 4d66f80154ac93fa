"""The token compressor: CLIP patch tokens → `n_tokens` continuous keyframe tokens of size `token_dim`.

    patches [B, N, W] ─► Linear(W, width) + learned position ─► keys/values
    pooled  [B, D]    ─► Linear(D, width)                     ─► one more key/value (the global CLS summary)
    queries [n, width] (learned) ─► `layers` × (self-attention among queries, cross-attention to the keys/values, MLP)
                                 ─► LayerNorm ─► Linear(width, token_dim) ─► output norm ─► tokens [B, n, token_dim]

Pre-LayerNorm blocks, scaled-dot-product attention. The frozen CLIP encoder sits outside this module (see
autoencoder.py): only these weights train. `output_norm` keeps the tokens on a fixed scale for the AR model that
predicts them: "layernorm" (no affine: zero mean and unit variance over the d channels of each token), "tanh"
(bounded), or "none".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from moviedreamer.errors import UserError

OUTPUT_NORMS = ("layernorm", "tanh", "none")


@dataclass
class CompressorConfig:
    patch_dim: int = 128  # W: width of the vision encoder's patch tokens
    pooled_dim: int = 0  # D: the pooled (projected CLS) embedding; 0 = not used
    num_patches: int = 64  # N: patch tokens per image (learned position table)
    n_tokens: int = 2
    token_dim: int = 64  # d
    width: int = 128
    layers: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    output_norm: str = "layernorm"

    @classmethod
    def from_dict(cls, data: dict) -> "CompressorConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"compressor config: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**data).check()

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> "CompressorConfig":
        for name in ("patch_dim", "num_patches", "n_tokens", "token_dim", "width", "layers", "heads"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"compressor config: {name} must be >= 1, found {getattr(self, name)}")
        if self.width % self.heads:
            raise UserError(f"compressor config: width {self.width} must be divisible by heads {self.heads}")
        if self.output_norm not in OUTPUT_NORMS:
            raise UserError(f"compressor config: output_norm must be one of {OUTPUT_NORMS}, found {self.output_norm!r}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"compressor config: dropout must be in [0, 1), found {self.dropout}")
        return self


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, w // h).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, w // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, n, w))


class QueryBlock(nn.Module):
    """Learned queries: self-attention among themselves, cross-attention to the image, MLP (pre-norm)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ctx, self.norm_mlp = (nn.LayerNorm(width) for _ in range(4))
        self.self_attn = Attention(width, heads, dropout)
        self.cross_attn = Attention(width, heads, dropout)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))

    def forward(self, q: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        x = self.norm_self(q)
        q = q + self.self_attn(x, x)
        q = q + self.cross_attn(self.norm_cross(q), self.norm_ctx(ctx))
        return q + self.mlp(self.norm_mlp(q))


class TokenCompressor(nn.Module):
    """forward(patch_tokens [B, N, W], pooled [B, D] | None) → keyframe tokens [B, n_tokens, token_dim]."""

    def __init__(self, config: CompressorConfig):
        super().__init__()
        c = self.config = config.check()
        self.patch_in = nn.Linear(c.patch_dim, c.width)
        self.pos = nn.Parameter(torch.randn(c.num_patches, c.width) * 0.02)
        self.pooled_in = nn.Linear(c.pooled_dim, c.width) if c.pooled_dim else None
        self.queries = nn.Parameter(torch.randn(c.n_tokens, c.width) * 0.02)
        self.blocks = nn.ModuleList(QueryBlock(c.width, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.layers))
        self.norm_out = nn.LayerNorm(c.width)
        self.proj_out = nn.Linear(c.width, c.token_dim)

    def forward(self, patch_tokens: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        if patch_tokens.dim() != 3 or patch_tokens.shape[-1] != c.patch_dim:
            raise UserError(f"compressor: expected patch tokens [B, N, {c.patch_dim}], found {list(patch_tokens.shape)} "
                            "(was the tokenizer trained with another vision encoder?)")
        if patch_tokens.shape[1] != c.num_patches:
            raise UserError(f"compressor: expected {c.num_patches} patch tokens per image, found {patch_tokens.shape[1]} "
                            "(the vision encoder's image size or patch size differs from the one it was trained with)")
        dtype = self.patch_in.weight.dtype
        ctx = self.patch_in(patch_tokens.to(dtype)) + self.pos.to(dtype)
        if self.pooled_in is not None:
            if pooled is None or pooled.shape[-1] != c.pooled_dim:
                raise UserError(f"compressor: expected the pooled embedding [B, {c.pooled_dim}], found "
                                f"{None if pooled is None else list(pooled.shape)}")
            ctx = torch.cat([self.pooled_in(pooled.to(dtype))[:, None], ctx], dim=1)
        q = self.queries.to(dtype).expand(patch_tokens.shape[0], -1, -1)
        for block in self.blocks:
            q = block(q, ctx)
        out = self.proj_out(self.norm_out(q))
        if c.output_norm == "layernorm":
            out = F.layer_norm(out, (c.token_dim,))
        elif c.output_norm == "tanh":
            out = torch.tanh(out)
        return out
