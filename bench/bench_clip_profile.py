"""Where one clip's time goes, and how much of the machine's matrix-multiply peak the clip model's denoiser reaches.

1. peak: the best of several fp32 matrix multiplies (torch.mm, 1024 and 2048 square) with the same threads, in GFLOP/s;
2. one clip from a toy keyframe through the profile's clip renderer, with
   - FLOPs counted by torch's FlopCounterMode (matmuls and convolutions: what the peak measures),
   - wall time split between the UNet, the VAE (encode + decode) and the rest (timers around their forward calls),
   - the operators that take the time (torch.profiler, self CPU time);
3. the denoiser's achieved GFLOP/s = its FLOPs / its time, as a share of the peak.

    .venv/bin/python bench/bench_clip_profile.py --frames 15 --threads 2
    .venv/bin/python bench/bench_clip_profile.py --i2v runs/toy-i2v-jam/export --frames 15
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from moviedreamer.pipeline.loading import clip_renderer
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import CHARACTER_IDS, SCENE_IDS
from moviedreamer.eval.referee import truth_clip
from moviedreamer.video.conditioning import ClipCondition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_referee import toy_profile  # noqa: E402


def matmul_peak(reps: int = 5) -> float:
    """GFLOP/s of the best fp32 square matmul this process reaches with its threads."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


class Timers:
    """Wall time inside wrapped callables, by name (nested calls count once, in the outer one)."""

    def __init__(self):
        self.seconds, self.depth = defaultdict(float), 0

    def wrap(self, obj, attr: str, name: str):
        original = getattr(obj, attr)

        def timed(*args, **kwargs):
            if self.depth:
                return original(*args, **kwargs)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.depth -= 1

        setattr(obj, attr, timed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--i2v", type=Path, help="the clip model folder (default: the toy profile's)")
    ap.add_argument("--frames", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=12, help="operators listed")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    renderer = clip_renderer(toy_profile(args.i2v), candidates=1)
    sampler = renderer.sampler
    rng = np.random.default_rng(5)
    shot = random_shot(rng, str(rng.choice(SCENE_IDS)), CHARACTER_IDS, 4.0, int(rng.integers(2**31)))
    key = truth_clip(shot, 1, 8, (128, 128))[0]
    cond = ClipCondition(text=f"{shot.action}. {shot.move}")
    list(renderer.render(key, min(args.frames, 8), cond, 0, 8))  # warm-up: first calls allocate

    peak = matmul_peak()
    timers = Timers()
    timers.wrap(sampler.model, "unet_forward", "denoiser (UNet)")
    timers.wrap(sampler.vae, "decode", "VAE decode")
    timers.wrap(sampler.vae, "encode", "VAE encode")
    flops = FlopCounterMode(display=False)
    t0 = time.perf_counter()
    with flops:
        list(renderer.render(key, args.frames, cond, 1, 8))
    wall_flops = time.perf_counter() - t0
    total = flops.get_total_flops()
    timers.seconds.clear()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        list(renderer.render(key, args.frames, cond, 1, 8))
    wall_prof = time.perf_counter() - t0
    timers.seconds.clear()
    t0 = time.perf_counter()
    list(renderer.render(key, args.frames, cond, 1, 8))
    wall = time.perf_counter() - t0
    parts = dict(timers.seconds)
    unet_s = parts.get("denoiser (UNet)", 0.0)

    # the UNet's FLOPs: a second count on the UNet alone (a counter starts from zero on every entry: summed per call)
    unet_counts = []
    original = sampler.model.unet.forward

    def counted(*a, **k):
        counter = FlopCounterMode(display=False)
        with counter:
            out = original(*a, **k)
        unet_counts.append(counter.get_total_flops())
        return out

    sampler.model.unet.forward = counted
    try:
        list(renderer.render(key, args.frames, cond, 1, 8))
    finally:
        sampler.model.unet.forward = original
    unet_flops = sum(unet_counts)

    print(f"one clip of {args.frames} frames at 128x128 ({shot.action}, {shot.move}); {args.threads} threads; "
          f"clip model {args.i2v or 'toy profile'}")
    print(f"\nmatmul peak (fp32 torch.mm, best of 1024 / 2048 square): {peak:.1f} GFLOP/s\n")
    print("| part | s | share of the clip |\n|---|---|---|")
    for name, s in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {s:.2f} | {s / wall:.0%} |")
    rest = wall - sum(parts.values())
    print(f"| rest (conditioning, scheduler, blending, uint8) | {rest:.2f} | {rest / wall:.0%} |")
    print(f"| **clip** | **{wall:.2f}** | 100% |")
    print(f"\nFLOPs of the clip {total / 1e9:.1f} G (UNet {unet_flops / 1e9:.1f} G); the UNet at "
          f"{unet_flops / max(unet_s, 1e-9) / 1e9:.1f} GFLOP/s = **{unet_flops / max(unet_s, 1e-9) / 1e9 / peak:.0%} of the peak**; "
          f"the whole clip at {total / wall / 1e9:.1f} GFLOP/s")
    print(f"(walls: plain {wall:.2f} s, under the FLOP counter {wall_flops:.2f} s, under the profiler {wall_prof:.2f} s)")
    print("\n| operator (self CPU) | ms | calls | share |\n|---|---|---|---|")
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    cpu_total = sum(e.self_cpu_time_total for e in events)
    for e in events[: args.top]:
        print(f"| {e.key} | {e.self_cpu_time_total / 1e3:.0f} | {e.count} | {e.self_cpu_time_total / cpu_total:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
