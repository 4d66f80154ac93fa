"""The GMM head: its NLL against torch.distributions, its sampling (temperature, seeds), its loss terms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from moviedreamer.ar.gmm import GMMHead, GMMParams, gmm_log_prob, gmm_loss, gmm_sample, split_params


def random_params(n=5, k=3, d=4, seed=0) -> GMMParams:
    g = torch.Generator().manual_seed(seed)
    return GMMParams(torch.randn(n, k, generator=g), torch.randn(n, k, d, generator=g) * 2, torch.randn(n, k, d, generator=g) * 0.7)


def test_log_prob_matches_torch_distributions_mixture():
    p = random_params()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1)) * 2
    ref = D.MixtureSameFamily(D.Categorical(logits=p.logits), D.Independent(D.Normal(p.means, torch.exp(0.5 * p.log_vars)), 1))
    torch.testing.assert_close(gmm_log_prob(p, x), ref.log_prob(x), rtol=1e-5, atol=1e-5)


def test_log_prob_by_hand_for_one_component():
    p = GMMParams(torch.zeros(1, 1), torch.tensor([[[1.0, -1.0]]]), torch.log(torch.tensor([[[4.0, 0.25]]])))
    x = torch.tensor([[2.0, 0.0]])
    # N(2; 1, 2²) N(0; -1, 0.5²)
    by_hand = sum(-0.5 * ((xi - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi) for xi, m, s in ((2, 1, 2), (0, -1, 0.5)))
    assert gmm_log_prob(p, x).item() == pytest.approx(by_hand, abs=1e-5)


def test_loss_is_nll_per_dim_plus_weighted_l1_l2_of_the_mixture_mean():
    p = random_params()
    x = torch.randn(5, 4)
    loss, m = gmm_loss(p, x, nll_weight=0.5, l1_weight=2.0, l2_weight=3.0)
    mean = (p.logits.softmax(-1)[..., None] * p.means).sum(-2)
    nll = -gmm_log_prob(p, x).mean() / 4
    expected = 0.5 * nll + 2.0 * (mean - x).abs().mean() + 3.0 * (mean - x).pow(2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert m["nll"] == pytest.approx(nll.item(), rel=1e-5)


def test_head_emits_2kd_plus_k_numbers_with_bounded_log_variances():
    head = GMMHead(hidden=16, dim=6, components=4)
    assert head.out.out_features == 2 * 4 * 6 + 4
    p = head.params(head(torch.randn(3, 16)))
    assert p.logits.shape == (3, 4) and p.means.shape == (3, 4, 6) and p.log_vars.shape == (3, 4, 6)
    extreme = split_params(torch.cat([torch.zeros(2, 4), torch.zeros(2, 24), torch.tensor([[-1e4] * 24, [1e4] * 24])], -1), 4, 6)
    assert torch.isfinite(extreme.log_vars).all() and extreme.log_vars.min() >= -9.001 and extreme.log_vars.max() <= 6.001


def test_sampling_seeds_temperature_and_statistics():
    p = random_params(n=1, k=2, d=3)
    a = gmm_sample(p, 1.0, torch.Generator().manual_seed(7))
    b = gmm_sample(p, 1.0, torch.Generator().manual_seed(7))
    c = gmm_sample(p, 1.0, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    best = p.logits.argmax(-1)
    torch.testing.assert_close(gmm_sample(p, 0.0), p.means[0, best])  # T = 0: the most likely component's mean
    # many draws: the empirical mean approaches the mixture mean
    many = GMMParams(p.logits.expand(20000, -1), p.means.expand(20000, -1, -1), p.log_vars.expand(20000, -1, -1))
    draws = gmm_sample(many, 1.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.mean(0), p.mean[0], atol=0.08, rtol=0)
    # a low temperature concentrates the draws
    cold = gmm_sample(many, 0.1, torch.Generator().manual_seed(0))
    assert cold.std(0).max() < draws.std(0).max()
