"""Tiny random stand-ins for the video tests (no tests here): a VAE, a vision encoder, a UNet config and a sampler wired
from them; the SVD-XT diffusers folder in the real layout comes from moviedreamer/testing/formats.py."""

from __future__ import annotations

import numpy as np
import torch

from moviedreamer.testing.formats import make_svd_folder  # noqa: F401  (the video tests import it from here)

TINY_UNET = dict(
    sample_size=8, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(32, 32), addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
    layers_per_block=1, cross_attention_dim=32, num_attention_heads=(1, 1), num_frames=4,
)


def tiny_vae(seed: int = 0, scaling_factor: float = 0.9):
    """AutoencoderKL, 2x downsampling, 4 latent channels: 16x16 frames -> 8x8x4 latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, norm_num_groups=4, sample_size=16, scaling_factor=scaling_factor)
    return vae.eval().requires_grad_(False)


class FakeVision:
    """The VisionEncoder interface (encode_image -> pooled, tokens) as a fixed random projection of the pixels:
    different images give different embeddings, the same image the same one."""

    fingerprint = "fake-vision"

    def __init__(self, dim: int = 24, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.embed_dim, self.width = dim, dim
        self.proj = torch.randn(3 * 4 * 4, dim, generator=g)
        self.calls = 0

    def encode_image(self, images):
        self.calls += 1
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        pooled = x @ self.proj
        return pooled, pooled[:, None]


class FakeDescriptor:
    fingerprint = "fake-descriptor"

    def __init__(self, dim: int = 16):
        self.embed_dim = dim

    def encode(self, texts, normalize=False):
        from moviedreamer.encoders.longclip import EncodedText

        rows = [torch.randn(self.embed_dim, generator=torch.Generator().manual_seed(sum(map(ord, t)))) for t in texts]
        return EncodedText(torch.stack(rows), [len(t) for t in texts], [False] * len(texts))

    def encode_words(self, texts, n):
        """[B, n, D]: one fixed random state per word (zeros past the text's words)."""
        out = torch.zeros(len(texts), n, self.embed_dim)
        for i, t in enumerate(texts):
            for j, word in enumerate(t.split()[:n]):
                out[i, j] = torch.randn(self.embed_dim, generator=torch.Generator().manual_seed(sum(map(ord, word))))
        return out


def tiny_model(descriptor_dim: int = 16, seed: int = 0, vision_dim: int = 24, **settings):
    from moviedreamer.video.model import AnchoredI2V, I2VSettings

    torch.manual_seed(seed)
    s = I2VSettings(num_frames=4, overlap=2, steps=3, tau=2, noise_aug=0.0, decode_chunk=3, **settings)
    model = AnchoredI2V.build(dict(TINY_UNET), vision_dim, descriptor_dim, "token", s)
    with torch.no_grad():  # a fresh descriptor projection is zero: make it matter in the tests
        if model.conditioning.descriptor_proj is not None:
            model.conditioning.descriptor_proj.weight.normal_(0, 0.2)
    return model.eval()


def tiny_sampler(descriptor: bool = True, **settings):
    from moviedreamer.video.sampler import AnchoredSampler

    vae = tiny_vae()
    model = tiny_model(16 if descriptor else 0, **settings)
    model.settings.vae_scaling_factor = float(vae.config.scaling_factor)
    return AnchoredSampler(model, vae, FakeVision(), FakeDescriptor() if descriptor else None)


def image(seed: int, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    x = int(rng.integers(0, size // 2))
    img[size // 4 : size // 2, x : x + size // 4] = rng.integers(0, 256, 3)
    return img
