"""Toy VAE figures: reconstruction PSNR on held-out renders, encode/decode cost, latent statistics.

    .venv/bin/python bench/bench_vae.py --data data/toyworld-heldout            # 500 held-out frames at 128x128
    .venv/bin/python bench/bench_vae.py --vae runs/toy-vae/export --frames 100

Held-out = a shard folder rendered from seeds the training set did not use (docs/training.md). Frames are taken
round-robin over episodes (every shot's keyframe first, then clip frames), so 500 frames span many scenes.
Without --data it falls back to synthetic shards (a smoke run; the figure is not the toy-world one).
Prints figures; asserts nothing (the tests do not time anything).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def held_out_frames(data: Path, n: int, res: int):
    import torch
    import torch.nn.functional as F

    from moviedreamer.train.data import ShardIndex

    index = ShardIndex(data)
    per_episode = []
    for i in range(len(index)):
        ep = index.load(i, ("keyframes", "clips"))
        frames = list(ep["keyframes"]) if "keyframes" in ep else []
        if "clips" in ep:
            c = ep["clips"]
            frames += [c[s, t] for t in range(1, c.shape[1], max(1, c.shape[1] // 4)) for s in range(c.shape[0])]
        per_episode.append(frames)
        if sum(len(f) for f in per_episode) >= 4 * n:
            break
    picked, k = [], 0
    while len(picked) < n and any(k < len(f) for f in per_episode):
        picked += [f[k] for f in per_episode if k < len(f)]
        k += 1
    if len(picked) < n:
        print(f"note: {data} holds only {len(picked)} frames; using them all", file=sys.stderr)
    x = torch.stack(picked[:n]).permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[-1] != res:
        x = F.interpolate(x, size=(res, res), mode="area")
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", type=Path, default=None, help="diffusers AutoencoderKL folder (default: the toy profile's vae)")
    ap.add_argument("--data", type=Path, default=None, help="held-out shard folder")
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    import torch
    from diffusers import AutoencoderKL

    torch.set_num_threads(args.threads)
    if args.vae is None:
        from moviedreamer.registry import Registry

        args.vae = Registry.load("toy").path("vae")
    vae = AutoencoderKL.from_pretrained(str(args.vae), low_cpu_mem_usage=False).eval()
    data = args.data
    if data is None:
        from moviedreamer.train.synthetic import write_synthetic_shards

        data = write_synthetic_shards(Path(tempfile.mkdtemp()) / "syn", episodes=64, shots=4, frames=4, size=args.res)
        print("note: no --data: synthetic frames (smoke run only)", file=sys.stderr)
    x = held_out_frames(data, args.frames, args.res)

    psnrs, zs = [], []
    with torch.no_grad():
        for i in range(0, len(x), 25):
            b = x[i : i + 25]
            z = vae.encode(b).latent_dist.mode()
            y = vae.decode(z).sample.clamp(-1, 1)
            y = ((y + 1) * 127.5).round() / 127.5 - 1  # score what is shown: 8-bit pixels
            mse = ((y - b) / 2).pow(2).flatten(1).mean(1)
            psnrs.append(-10 * torch.log10(mse.clamp_min(1e-10)))
            zs.append(vae.encode(b).latent_dist.sample())
        psnr = torch.cat(psnrs)
        z = torch.cat(zs) * vae.config.scaling_factor

        def timed(fn, reps):
            fn()
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            return (time.perf_counter() - t) / reps

        lat1, lat16 = vae.encode(x[:1]).latent_dist.mode(), vae.encode(x[:16]).latent_dist.mode()
        dec1 = timed(lambda: vae.decode(lat1), 10) * 1000
        dec16 = timed(lambda: vae.decode(lat16), 2) * 1000 / 16
        enc16 = timed(lambda: vae.encode(x[:16]), 2) * 1000 / 16
    figures = {
        "vae": str(args.vae), "data": str(data), "frames": len(x), "resolution": args.res,
        "psnr_mean_db": round(psnr.mean().item(), 2), "psnr_p05_db": round(psnr.quantile(0.05).item(), 2),
        "psnr_min_db": round(psnr.min().item(), 2),
        "decode_ms_per_frame_batch1": round(dec1, 1), "decode_ms_per_frame_batch16": round(dec16, 1),
        "encode_ms_per_frame_batch16": round(enc16, 1), "threads": args.threads,
        "latent_shape": list(lat1.shape[1:]), "scaling_factor": vae.config.scaling_factor,
        "scaled_latent_std": round(z.std().item(), 3), "scaled_latent_mean": round(z.mean().item(), 3),
        "params": sum(p.numel() for p in vae.parameters()),
    }
    print(f"toy VAE {args.vae}")
    print(f"  PSNR on {len(x)} held-out frames at {args.res}x{args.res}: {figures['psnr_mean_db']:.2f} dB "
          f"(5th percentile {figures['psnr_p05_db']:.2f}, min {figures['psnr_min_db']:.2f})")
    print(f"  decode {dec1:.1f} ms/frame (batch 1), {dec16:.1f} ms/frame (batch 16); encode {enc16:.1f} ms/frame; {args.threads} thread(s)")
    print(f"  latent {figures['latent_shape']}, scaling_factor {vae.config.scaling_factor:.4f} -> scaled latents std "
          f"{figures['scaled_latent_std']:.3f}, mean {figures['scaled_latent_mean']:.3f}; {figures['params'] / 1e6:.2f}M params")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
