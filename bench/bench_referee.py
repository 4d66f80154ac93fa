"""The video referee on held-out toy shots, side by side: the ground truth, the committed clip model's clips, and
the slideshow baseline (the keyframe repeated for the shot's length), plus pure noise as a floor check.

Each held-out shot is a random toy-world shot (fresh seeds); its keyframe is the truth's first frame, so the figures
measure the clip stage alone. The truth must score high on every figure, the slideshow near chance on the action
figures (a still clip is stand + static), the noise worst.

    .venv/bin/python bench/bench_referee.py --shots 128 --frames 15 --cache runs/referee-clips.npz
    .venv/bin/python bench/bench_referee.py --shots 8 --frames 15          # a quick look

Generated clips are cached (`--cache`): a rerun scores them again without sampling.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from moviedreamer.eval.referee import Referee, strip_frames, truth_clip
from moviedreamer.eval.report import strip_sheet
from moviedreamer.pipeline.profile import Profile
from moviedreamer.pipeline.loading import clip_renderer
from moviedreamer.toyworld.grammar import write_action, write_camera
from moviedreamer.toyworld.story import random_shot
from moviedreamer.toyworld.world import CHARACTER_BY_ID, CHARACTER_IDS, SCENE_IDS
from moviedreamer.video.conditioning import ClipCondition

SEED = 81_000_000  # far from every training stream


def heldout_shots(n: int, seed: int = SEED):
    rng = np.random.default_rng(seed)
    return [random_shot(rng, str(rng.choice(SCENE_IDS)), CHARACTER_IDS, 4.0, int(rng.integers(2**31))) for _ in range(n)]


def generate(profile: Profile, shots, frames: int, fps: int, size: int, seed: int, cache: Path | None = None, **overrides) -> np.ndarray:
    """The clip model's clip of every shot from its truth keyframe; with `cache`, saved every 8 clips and resumed.
    `overrides`: sampler settings (e.g. inner_guidance=0 for an ablation)."""
    renderer = clip_renderer(profile, **overrides)
    out = np.zeros((len(shots), frames, size, size, 3), np.uint8)
    done = 0
    if cache is not None and cache.is_file():
        data = np.load(cache)
        if int(data["seed"]) == seed and data["clips"].shape[1:] == out.shape[1:]:
            done = min(int(data["done"]), len(shots))
            out[:done] = data["clips"][:done]
            print(f"resuming after {done} clips from {cache}")
    t0 = time.perf_counter()
    for i, p in enumerate(shots):
        if i < done:
            continue
        key = truth_clip(p, 1, fps, (size, size))[0]
        cond = ClipCondition(text=describe(p), duration=p.duration)  # the clip is the shot's opening
        for j, frame in enumerate(renderer.render(key, frames, cond, seed + i, fps)):
            out[i, j] = frame
        if (i + 1) % 8 == 0:
            print(f"  generated {i + 1}/{len(shots)} clips, {time.perf_counter() - t0:.0f} s", flush=True)
            if cache is not None:
                save_cache(cache, out[: i + 1], seed, i + 1)
    return out


def save_cache(path: Path, clips: np.ndarray, seed: int, done: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(tmp, clips=clips, seed=seed, done=done)
    tmp.replace(path)


def describe(p) -> str:
    """The shot's action and camera as the story's script writes them (the clip model reads "{action}. {camera}")."""
    rng = np.random.default_rng(0)
    names = [CHARACTER_BY_ID[c].name for c in p.characters]
    return f"{write_action(p, names, rng)}. {write_camera(p, rng)}"


def score(profile: Profile, shots, clips: np.ndarray, fps: int, with_floor: bool) -> dict:
    """The referee's movie-level figures, plus `by_action` / `by_framing`: action accuracy per group (shot count)."""
    referee = Referee(profile.action_judge, profile.vision, profile.floor_vae if with_floor else None, keep_strips=False)
    for i, (p, clip) in enumerate(zip(shots, clips)):
        referee.add_shot(i, p, clip, fps)
    summary, rows = referee.summary()
    for group in ("action", "framing"):
        hits: dict[str, list[bool]] = {}
        for p, row in zip(shots, rows):
            hits.setdefault(getattr(p, group), []).append(row["judged"]["action"] == p.action)
        summary[f"by_{group}"] = {k: [round(float(np.mean(v)), 3), len(v)] for k, v in sorted(hits.items())}
    return summary


def toy_profile(i2v: Path | None = None) -> Profile:
    """The toy profile, with another clip model folder in place of its own when `i2v` is given."""
    profile = Profile.load("toy")
    if i2v is not None:
        comp = profile.registry.components["i2v"]
        profile.registry.components["i2v"] = dataclasses.replace(comp, path=Path(i2v).resolve())
    return profile


def setting_value(text: str):
    """A --set value as JSON (numbers, true, null), else as the plain string it is (e.g. clone_mode=inversion)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--frames", type=int, default=15, help="frames per shot (15 at 8 fps: two segments of the toy I2V)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--cache", type=Path, help="an .npz of generated clips: resumed when it matches, written every 8 clips")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cached-only", action="store_true", help="score only the clips already in --cache (no sampling)")
    ap.add_argument("--strips", type=Path, help="save a PNG strip sheet (first / middle / last) of truth, generated and slideshow")
    ap.add_argument("--json", type=Path, help="write the table as JSON too")
    ap.add_argument("--i2v", type=Path, help="the clip model folder to measure (default: the toy profile's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a sampler setting for this run (repeatable), e.g. inner_guidance=0")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = toy_profile(args.i2v)
    label = "committed I2V" if args.i2v is None else str(args.i2v)
    overrides = {k: setting_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    if overrides:
        label += ", " + ", ".join(args.set)
    if args.cached_only:
        data = np.load(args.cache)
        args.shots = int(data["done"])
        print(f"scoring the {args.shots} clips in {args.cache}")
    shots = heldout_shots(args.shots, args.seed)
    truth = np.stack([truth_clip(p, args.frames, args.fps, (args.size, args.size)) for p in shots])
    slideshow = np.repeat(truth[:, :1], args.frames, axis=1)
    noise = np.random.default_rng(1).integers(0, 256, truth.shape, dtype=np.uint8)
    t0 = time.perf_counter()
    generated = generate(profile, shots, args.frames, args.fps, args.size, args.seed, args.cache, **overrides)
    print(f"clips ready in {time.perf_counter() - t0:.0f} s")
    if args.cache:
        save_cache(args.cache, generated, args.seed, len(shots))
    rows = {}
    for name, clips, floor in (("ground truth", truth, True), (f"generated ({label})", generated, False),
                               ("slideshow (keyframe repeated)", slideshow, False), ("noise", noise, False)):
        rows[name] = score(profile, shots, clips, args.fps, floor)
    keys = ["action_accuracy", "direction_accuracy", "camera_move_accuracy", "frame_distance", "frame_distance_first_quarter",
            "frame_distance_last_quarter", "decay"]
    print(f"\n{args.shots} held-out toy shots, {args.frames} frames at {args.fps} fps, {args.size}x{args.size}; "
          f"frame-distance floor (truth through the VAE): {rows['ground truth']['frame_distance_floor']:.4f}")
    print("| figure | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in keys:
        print(f"| {k} | " + " | ".join("n/a" if r.get(k) is None else f"{r[k]:.3f}" for r in rows.values()) + " |")
    for group in ("by_action", "by_framing"):
        print(f"\naction accuracy {group.replace('_', ' ')} (shots): " + "; ".join(
            f"{name} " + " / ".join(f"{r[group][k][0]:.2f}" for r in rows.values()) + f" ({v[1]})"
            for k, v in next(iter(rows.values()))[group].items() for name in [k]) + "   [" + " / ".join(rows) + "]")
    if args.json:
        args.json.write_text(json.dumps({"shots": args.shots, "frames": args.frames, "rows": rows}, indent=1))
    if args.strips:
        n = min(12, len(shots))
        sheets = [strip_frames(c) for i in range(n) for c in (truth[i], generated[i], slideshow[i])]
        labels = [f"shot {i}: {shots[i].action} {shots[i].direction or ''} {shots[i].move}\n{kind}" for i in range(n)
                  for kind in ("truth", "generated", "slideshow")]
        strip_sheet(args.strips, sheets, labels)
        print(f"wrote {args.strips}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
