"""The time-only 3-D convolutions run as 2-D ones: the same outputs and gradients, the same state dict."""

from __future__ import annotations

import copy

import torch
from torch import nn

from moviedreamer.video.temporal_conv import TemporalConv3d, temporal_convs_as_2d


def test_a_temporal_conv_gives_the_same_output_and_gradients_as_conv3d():
    torch.manual_seed(0)
    for kernel, stride, padding in (((3, 1, 1), 1, (1, 0, 0)), ((1, 1, 1), 1, 0), ((3, 1, 1), (2, 1, 1), (1, 0, 0))):
        ref = nn.Conv3d(6, 5, kernel, stride=stride, padding=padding)
        fast = copy.deepcopy(ref)
        assert temporal_convs_as_2d(nn.Sequential(fast)) == 1 and type(fast) is TemporalConv3d
        x = torch.randn(2, 6, 7, 4, 3, requires_grad=True)
        a, b = ref(x), fast(x)
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
        ga = torch.autograd.grad(a.square().sum(), [x, ref.weight])
        gb = torch.autograd.grad(b.square().sum(), [x, fast.weight])
        assert all(torch.allclose(u, v, atol=1e-4) for u, v in zip(ga, gb))
        assert fast.state_dict().keys() == ref.state_dict().keys()
    spatial = nn.Conv3d(2, 2, (3, 3, 3), padding=1)  # not time-only: left alone
    assert temporal_convs_as_2d(nn.Sequential(spatial)) == 0 and type(spatial) is nn.Conv3d


def test_the_clip_model_uses_them_and_predicts_what_diffusers_does():
    from video_standins import tiny_model

    model = tiny_model()
    convs = [m for m in model.unet.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(type(m) is TemporalConv3d for m in convs)
    plain = copy.deepcopy(model.unet)
    for m in plain.modules():
        if type(m) is TemporalConv3d:
            m.__class__ = nn.Conv3d
    x = torch.randn(1, 4, 8, 8, 8)
    ids = torch.tensor([[7.0, 32.0, 0.0]])
    tokens = torch.randn(1, 1, 32)
    a = model.unet(x, torch.tensor([0.5]), tokens, ids, return_dict=False)[0]
    b = plain(x, torch.tensor([0.5]), tokens, ids, return_dict=False)[0]
    assert torch.allclose(a, b, atol=1e-4)
