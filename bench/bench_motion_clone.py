"""MotionClone on held-out toy shots: does a shot move like its reference clip, and keep its own scene and cast?

Each held-out shot gets a reference: the true clip of another toy shot (another scene, other characters) with a
moving action. The shot's script asks for the reference's action and camera (as a user writing "Mia walks left"
beside a clip of someone walking left would), so the same shots without the reference are the baseline: the
referee reads the reference's action, direction and camera move in both, and the frame judge reads the shot's own
scene + characters (middle and last frames). Time per shot: without a reference, with one read for the first time,
and with it cached.

    .venv/bin/python bench/bench_motion_clone.py --shots 32 --i2v runs/toy-i2v-jam/export
    .venv/bin/python bench/bench_motion_clone.py --shots 8 --set clone_mode=inversion       # the full-inversion reader
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_referee import describe, heldout_shots, setting_value, toy_profile  # noqa: E402

from moviedreamer.eval.referee import Referee, strip_frames, truth_clip  # noqa: E402
from moviedreamer.eval.report import strip_sheet  # noqa: E402
from moviedreamer.media import ClipWriter  # noqa: E402
from moviedreamer.metrics import judge_fidelity  # noqa: E402
from moviedreamer.pipeline.loading import clip_renderer  # noqa: E402
from moviedreamer.video.conditioning import ClipCondition  # noqa: E402

SEED = 82_000_000  # far from every training stream and from the referee bench's shots


def pairs(n: int, seed: int = SEED):
    """(shot, reference) pairs: the reference moves, in another scene with none of the shot's characters; the shot
    asks for the reference's action and camera move."""
    shots, refs = heldout_shots(4 * n, seed), heldout_shots(8 * n, seed + 1)
    out = []
    for p in shots:
        for q in refs:
            if q.action != "stand" and q.scene != p.scene and not set(q.characters) & set(p.characters):
                refs.remove(q)
                out.append((dataclasses.replace(p, action=q.action, direction=q.direction, move=q.move), q))
                break
        if len(out) == n:
            return out
    raise SystemExit(f"only {len(out)} pairs found for {n} shots")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--frames", type=int, default=15)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--i2v", type=Path, help="the clip model folder (default: the toy profile's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a sampler setting (repeatable), e.g. clone_weight=2")
    ap.add_argument("--strips", type=Path, help="a PNG sheet: reference, with, without (first / middle / last)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = toy_profile(args.i2v)
    overrides = {k: setting_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    work = Path(tempfile.mkdtemp(prefix="bench-motion-clone-"))
    renderer = clip_renderer(profile, **overrides)
    renderer.cache_to(work / "cache")
    size = (args.size, args.size)
    shots = pairs(args.shots)
    refs, with_ref, without = [], [], []
    times = {"without": [], "with, first read": [], "with, cached": []}
    for i, (p, q) in enumerate(shots):
        key = truth_clip(p, 1, args.fps, size)[0]
        ref = truth_clip(q, args.frames, args.fps, size)
        refs.append(ref)
        path = work / f"ref-{i}.mp4"
        with ClipWriter(path, args.fps, args.size, args.size) as w:
            for f in ref:
                w.write(f)
        text = describe(p)
        for label, cond, sink in (("without", ClipCondition(text=text), without),
                                  ("with, first read", ClipCondition(text=text, motion_reference=str(path)), with_ref),
                                  ("with, cached", ClipCondition(text=text, motion_reference=str(path)), None)):
            if label == "with, cached" and i >= 4:
                continue  # a few are enough for the time
            t0 = time.perf_counter()
            clip = np.stack(list(renderer.render(key, args.frames, cond, SEED + i, args.fps)))
            times[label].append(time.perf_counter() - t0)
            if sink is not None:
                sink.append(clip)
        print(f"  shot {i + 1}/{len(shots)}: {p.action} {p.direction or ''} {p.move}", flush=True)
    rows = {}
    judge = profile.judge
    for name, clips in (("reference (truth of another shot)", refs), ("with the reference", with_ref), ("without (text only)", without)):
        referee = Referee(profile.action_judge, profile.vision, None, keep_strips=False)
        for i, ((p, q), clip) in enumerate(zip(shots, clips)):
            referee.add_shot(i, q if name.startswith("reference") else p, clip, args.fps)
        summary, _ = referee.summary()
        own = [s[1] if name.startswith("reference") else s[0] for s in shots]  # whose scene and cast the frames should show
        frames = np.stack([c[j] for c in clips for j in (len(c) // 2, len(c) - 1)])
        casts = [list(s.characters) for s in own for _ in range(2)]
        preds = judge.predict(frames, cast=casts)
        truths = [{"scene": s.scene, "characters": list(s.characters)} for s in own for _ in range(2)]
        fid = judge_fidelity(preds, truths)
        rows[name] = {"action": summary["action_accuracy"], "direction": summary["direction_accuracy"],
                      "camera": summary["camera_move_accuracy"], "scene + characters": fid["scene_and_characters"]}
    print(f"\n{len(shots)} held-out shots, each with another shot's clip as its motion reference; {args.frames} frames at {args.fps} fps"
          + (f"; settings {', '.join(args.set)}" if args.set else ""))
    print("| figure | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in ("action", "direction", "camera", "scene + characters"):
        print(f"| {k} | " + " | ".join("n/a" if r[k] is None else f"{r[k]:.3f}" for r in rows.values()) + " |")
    base = float(np.mean(times["without"]))
    print("\n| time per shot | s | x without |\n|---|---|---|")
    for label, ts in times.items():
        print(f"| {label} | {np.mean(ts):.2f} | {np.mean(ts) / base:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "times": {k: float(np.mean(v)) for k, v in times.items()}}, indent=1))
    if args.strips:
        n = min(8, len(shots))
        sheets = [strip_frames(c) for i in range(n) for c in (refs[i], with_ref[i], without[i])]
        labels = [f"shot {i}: {shots[i][0].action} {shots[i][0].direction or ''} {shots[i][0].move}\n{kind}" for i in range(n)
                  for kind in ("reference", "with reference", "without")]
        strip_sheet(args.strips, sheets, labels)
        print(f"wrote {args.strips}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
