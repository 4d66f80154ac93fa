"""Long shots: does the clip model keep a shot's scene and characters for 30 segments? Held-out toy shots rendered as
long takes (the toy world renders any length: walkers are tracked by the camera, a pan or zoom spans the whole
shot), their truth keyframe extended by the clip model, and the toy judge's reading of each generated frame compared
with its reading of the truth frame at the same time (scene and exact characters), per segment; beside the
slideshow (the keyframe repeated: it holds by construction, so it is the ceiling of holding, not of acting) and the
truth's own agreement (1.0 where the judge is right). Actions are the referee's business (bench_referee.py).

    .venv/bin/python bench/bench_long_shot.py --shots 8 --segments 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from moviedreamer.eval.referee import truth_clip
from moviedreamer.pipeline.loading import clip_renderer
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import CHARACTER_IDS, SCENE_IDS
from moviedreamer.video.conditioning import ClipCondition
from moviedreamer.video.work import plan_segments

from bench_referee import describe, setting_value, toy_profile

SEED = 83_000_000  # far from every training stream and from bench_referee's shots
REPORT = (1, 5, 10, 20, 30)


def agreement(judge, frames: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per frame: the judge reads the same scene and the same set of characters in both."""
    a, b = judge.predict(frames), judge.predict(truth)
    return np.array([p["scene"] == q["scene"] and set(p["characters"]) == set(q["characters"]) for p, q in zip(a, b)], dtype=float)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--segments", type=int, default=30)
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--i2v", type=Path, help="the clip model folder to measure (default: the toy profile's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a sampler setting for this run (repeatable)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--strips", type=Path, help="save a PNG of truth / generated frames at the reported segments")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = toy_profile(args.i2v)
    overrides = {k: setting_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    renderer = clip_renderer(profile, **overrides)
    s = renderer.sampler.settings
    n_frames = 1 + args.segments * (s.num_frames - s.overlap)
    plans = plan_segments(n_frames, s.num_frames, s.overlap)
    rng = np.random.default_rng(SEED)
    shots = [random_shot(rng, str(rng.choice(SCENE_IDS)), CHARACTER_IDS, n_frames / args.fps, int(rng.integers(2**31))) for _ in range(args.shots)]
    judge = profile.judge
    rows = {"generated": [], "slideshow": [], "truth": []}
    strips = []
    t0 = time.perf_counter()
    for i, p in enumerate(shots):
        truth = truth_clip(p, n_frames, args.fps, (args.size, args.size))
        cond = ClipCondition(text=describe(p))
        gen = np.stack(list(renderer.render(truth[0], n_frames, cond, SEED + i, args.fps)))
        for name, clip in (("generated", gen), ("slideshow", np.repeat(truth[:1], n_frames, 0)), ("truth", truth)):
            per_frame = agreement(judge, clip, truth)
            rows[name].append([float(per_frame[a : a + n].mean()) for a, n in plans])
        if args.strips:
            last = [min(n_frames - 1, plans[k - 1][0] + plans[k - 1][1] - 1) for k in REPORT if k <= len(plans)]
            strips.append(np.concatenate([np.concatenate([truth[f] for f in last], 1), np.concatenate([gen[f] for f in last], 1)], 0))
        print(f"  shot {i + 1}/{len(shots)} ({p.action} {p.direction or ''} {p.framing} {p.move}): generated "
              f"{rows['generated'][-1][0]:.2f} at segment 1, {rows['generated'][-1][-1]:.2f} at {len(plans)}; {time.perf_counter() - t0:.0f} s", flush=True)
    table = {name: np.array(v).mean(0) for name, v in rows.items()}
    report = sorted({k for k in REPORT if k <= len(plans)} | {len(plans)})
    print(f"\n{len(shots)} held-out long shots of {n_frames} frames ({len(plans)} segments) at {args.fps} fps: the judge's scene + exact "
          "characters, generated frame vs the truth frame at the same time, per segment")
    print("| clip | " + " | ".join(f"segment {k}" for k in report) + " | mean |")
    print("|---|" + "---|" * (len(report) + 1))
    for name, m in table.items():
        print(f"| {name} | " + " | ".join(f"{m[k - 1]:.2f}" for k in report) + f" | {m.mean():.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"shots": len(shots), "segments": len(plans), "rows": {k: v.tolist() for k, v in table.items()},
                                         "per_shot": rows, "settings": args.set}, indent=1))
    if args.strips:
        from PIL import Image

        Image.fromarray(np.concatenate(strips, 0)).save(args.strips)
        print(f"wrote {args.strips} (per shot: truth above, generated below; segments {', '.join(str(k) for k in REPORT)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
