"""The committed toy VAE, loaded from the toy profile, on fresh renders (not training data)."""

import torch


def test_toy_vae_reconstructs_fresh_renders():
    from diffusers import AutoencoderKL

    from moviedreamer.encoders.evaluate import fresh_frames
    from moviedreamer.registry import Registry

    vae = AutoencoderKL.from_pretrained(str(Registry.load("toy").path("vae")), low_cpu_mem_usage=False).eval()
    x = torch.stack([torch.from_numpy(f.image) for f in fresh_frames(16, seed=77_000_000)]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        y = vae.decode(z).sample.clamp(-1, 1)
    assert z.shape == (16, 4, 32, 32)
    assert 0.7 < (z * vae.config.scaling_factor).std().item() < 1.4  # diffusion stages expect about unit variance
    psnr = -10 * torch.log10(((y - x) / 2).pow(2).flatten(1).mean(1))
    assert psnr.mean().item() >= 28.0, psnr  # docs/training.md has the measured figure
