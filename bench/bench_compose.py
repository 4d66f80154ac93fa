"""New compositional characters vs the catalogue's twelve, side by side: does the toy profile draw any character a
story describes?

Held-out stories (fresh seeds) are written twice over: once with casts of random compositional characters (none of
the twelve), once with catalogue casts. Each story's keyframes are planned and rendered by the profile
(`MovieDreamerPipeline`, keyframes only) and judged by the compositional frame judge against the story's cast:
scene + exact characters per shot, the share of look attributes drawn as written (slot by slot), and the face
consistency of each character over its solo shots (short-term: consecutive appearances; long-term: all pairs).
The same figures on the truth renders (ground truth: must score near 1) and on noise frames (must score near 0)
stand beside them, so a figure that cannot fail shows itself.

    .venv/bin/python bench/bench_compose.py --stories 3 --minutes 0.5 --out runs/bench-compose
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from moviedreamer import MovieDreamerPipeline, load_story
from moviedreamer.eval.run import look_fidelity, solo_appearances
from moviedreamer.metrics import consistency, judge_fidelity
from moviedreamer.pipeline.profile import Profile
from moviedreamer.script.write import write_story
from moviedreamer.toyworld.look_judge import slot_order
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import generate_story, read_story_params
from moviedreamer.toyworld.world import CHARACTER_IDS

SEED = 91_000_000  # far from every training stream


def held_out_story(kind: str, seed: int, minutes: float) -> dict:
    """A story whose cast is all composed (none of the twelve) or all catalogue."""
    for attempt in range(100):
        story = generate_story(minutes, seed + 1000 * attempt, cast_size=4, composed=kind == "composed", title=f"{kind} {seed}")
        ids = {c["id"] for c in story["characters"]}
        if kind == "catalogue" or not ids & set(CHARACTER_IDS):
            return story
    raise RuntimeError("no composed cast without a catalogue character in 100 tries")


def figures(judge, faces, keyframes: np.ndarray, params, fps: int) -> dict:
    frames = [render_frame(p, 0, fps, keyframes.shape[1:3][::-1]) for p in params]
    truths = [{"scene": p.scene, "characters": f.visible, "order": slot_order(f)} for p, f in zip(params, frames)]
    cast = sorted({c for p in params for c in p.characters})
    preds = judge.predict(keyframes, cast=cast)
    out = judge_fidelity(preds, truths)
    out["look_attributes"] = look_fidelity(preds, truths)
    per_char = [consistency(a) for a in solo_appearances(faces, [p.characters for p in params], keyframes).values()]
    for key in ("st", "lt"):
        vals = [c[key] for c in per_char if c[key] is not None]
        out[key] = float(np.mean(vals)) if vals else None
    out["shots"] = len(params)
    return out


def story_bench_setup(argv, doc: str, per: str, seed: int, out: str):
    """The arguments shared by the story benches (stories, minutes, seed, profile, out, json) and what they load:
    (args, the profile's look judge, its face pack, the pipeline)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stories", type=int, default=3, help=f"stories per {per}")
    ap.add_argument("--minutes", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=seed)
    ap.add_argument("--profile", default="toy")
    ap.add_argument("--out", type=Path, default=Path(out))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    profile = Profile.load(args.profile)
    if not getattr(profile.judge, "reads_looks", False):
        raise SystemExit("this bench needs the compositional frame judge (LookJudge) in the profile")
    return args, profile.judge, profile.faces, MovieDreamerPipeline.from_pretrained(args.profile)


def main(argv=None) -> int:
    args, judge, faces, pipe = story_bench_setup(argv, __doc__, "kind", SEED, "runs/bench-compose")
    table: dict[str, dict[str, list]] = {}
    rng = np.random.default_rng(args.seed)
    for kind in ("composed", "catalogue"):
        for k in range(args.stories):
            story = held_out_story(kind, args.seed + k, args.minutes)
            folder = args.out / f"{kind}-{k}"
            folder.mkdir(parents=True, exist_ok=True)
            write_story(story, folder / "story.yaml")
            loaded = load_story(folder / "story.yaml")
            params = read_story_params(loaded)
            result = pipe(loaded, folder / "out", keyframes_only=True, quiet=True)
            generated = np.stack([result.keyframe(i) for i in range(len(params))])
            truth = np.stack([render_frame(p, 0, loaded.story.fps, generated.shape[1:3][::-1]).image for p in params])
            noise = rng.integers(0, 256, generated.shape, dtype=np.uint8)
            for source, frames in (("truth", truth), ("generated", generated), ("noise", noise)):
                table.setdefault(f"{kind} / {source}", {}).setdefault("runs", []).append(figures(judge, faces, frames, params, loaded.story.fps))
            print(f"{kind} story {k}: {len(params)} shots", flush=True)
    summary = {}
    keys = ("scene_and_characters", "look_attributes", "st", "lt")
    print(f"\n{'':24s}" + "".join(f"{k:>22s}" for k in keys + ("shots",)))
    for row, data in table.items():
        runs = data["runs"]
        shots = sum(r["shots"] for r in runs)
        summary[row] = {k: _weighted(runs, k) for k in keys} | {"shots": shots}
        print(f"{row:24s}" + "".join(f"{_fmt(summary[row][k]):>22s}" for k in keys) + f"{shots:>22d}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


def _weighted(runs, key):
    vals = [(r[key], r["shots"]) for r in runs if r.get(key) is not None]
    return sum(v * n for v, n in vals) / sum(n for _, n in vals) if vals else None


def _fmt(v):
    return "n/a" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
