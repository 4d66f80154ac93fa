"""A Gaussian-mixture output head over continuous keyframe tokens.

For every predicted token x ∈ R^d the head emits, from one hidden state, k mixture logits, k·d means and k·d
log-variances (diagonal covariances): 2kd + k numbers. The density is

    p(x) = Σ_j π_j N(x; μ_j, diag σ_j²),   π = softmax(logits),   σ_j² = exp(log_var_j)

The loss (`gmm_loss`) is the mixture negative log-likelihood (per dimension) plus L1 and L2 between the
mixture mean Σ_j π_j μ_j and the true token, each weighted from the config. Sampling picks a component from
softmax(logits / T) and draws μ + T·σ·ε, with a caller-supplied generator (per-shot seeds); T = 0 gives the
mean of the most likely component (deterministic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOG_VAR_MIN, LOG_VAR_MAX = -9.0, 6.0  # σ from ~0.011 to 20: keeps the NLL finite when a component collapses
LOG_2PI = math.log(2 * math.pi)


@dataclass
class GMMParams:
    logits: torch.Tensor  # [..., k]
    means: torch.Tensor  # [..., k, d]
    log_vars: torch.Tensor  # [..., k, d]

    @property
    def mean(self) -> torch.Tensor:
        """The mixture mean Σ_j π_j μ_j, [..., d]."""
        return (self.logits.softmax(-1).unsqueeze(-1) * self.means).sum(-2)


class GMMHead(nn.Module):
    """hidden [..., H] → GMMParams over d-dim tokens with k components (a LayerNorm'd MLP then one Linear)."""

    def __init__(self, hidden: int, dim: int, components: int, mlp_hidden: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.dim, self.k = dim, components
        mid = mlp_hidden or hidden
        self.mlp = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, mid), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(mid, components * (2 * dim + 1))
        with torch.no_grad():  # start near a unit-variance mixture around small random means
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
            self.out.bias[components : components + components * dim].normal_(0.0, 0.5)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """The raw parameters [..., k(2d+1)] (a plain tensor: ZeRO-3's backward hooks only see tensor outputs)."""
        return self.out(self.mlp(h))

    def params(self, raw: torch.Tensor) -> GMMParams:
        return split_params(raw.float(), self.k, self.dim)


def split_params(y: torch.Tensor, k: int, d: int) -> GMMParams:
    """Raw head output [..., k(2d+1)] → GMMParams (log-variances softly kept inside [LOG_VAR_MIN, LOG_VAR_MAX])."""
    lead = y.shape[:-1]
    logits = y[..., :k]
    means = y[..., k : k + k * d].reshape(*lead, k, d)
    raw = y[..., k + k * d :].reshape(*lead, k, d)
    log_vars = LOG_VAR_MIN + F.softplus(raw - LOG_VAR_MIN)  # smooth lower bound
    log_vars = LOG_VAR_MAX - F.softplus(LOG_VAR_MAX - log_vars)  # smooth upper bound
    return GMMParams(logits, means, log_vars)


def gmm_log_prob(p: GMMParams, x: torch.Tensor) -> torch.Tensor:
    """log p(x) for x [..., d] → [...] (a log-sum-exp over the components; computed in float32)."""
    x = x.float().unsqueeze(-2)  # [..., 1, d]
    comp = -0.5 * (((x - p.means) ** 2) * torch.exp(-p.log_vars) + p.log_vars + LOG_2PI).sum(-1)  # [..., k]
    return torch.logsumexp(comp + p.logits.log_softmax(-1), dim=-1)


def gmm_loss(p: GMMParams, x: torch.Tensor, nll_weight: float = 1.0, l1_weight: float = 1.0, l2_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Mixture NLL (per dimension) + L1 + L2 between the mixture mean and x; returns (loss, metrics)."""
    d = x.shape[-1]
    nll = -gmm_log_prob(p, x).mean() / d
    mean = p.mean
    diff = mean - x.float()
    l1, l2 = diff.abs().mean(), diff.pow(2).mean()
    loss = nll_weight * nll + l1_weight * l1 + l2_weight * l2
    return loss, {"nll": nll.item(), "l1": l1.item(), "mse": l2.item()}


def gmm_sample(p: GMMParams, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per leading index, [..., d]. Random numbers come from `generator` on the CPU, so a seed gives the same
    draw on every device."""
    lead, k, d = p.logits.shape[:-1], p.logits.shape[-1], p.means.shape[-1]
    logits = p.logits.reshape(-1, k).float().cpu()
    means = p.means.reshape(-1, k, d).float().cpu()
    log_vars = p.log_vars.reshape(-1, k, d).float().cpu()
    rows = torch.arange(logits.shape[0])
    if temperature <= 0:
        j = logits.argmax(-1)
        return means[rows, j].reshape(*lead, d).to(p.means.device)
    probs = (logits / temperature).softmax(-1)
    j = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    eps = torch.randn(logits.shape[0], d, generator=generator)
    x = means[rows, j] + temperature * torch.exp(0.5 * log_vars[rows, j]) * eps
    return x.reshape(*lead, d).to(p.means.device)
