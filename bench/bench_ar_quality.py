"""AR planner quality on held-out toy stories: script fidelity and character consistency of the planned keyframes,
with and without reference faces, next to the ground-truth renders. Prints; asserts nothing.

    .venv/bin/python bench/bench_ar_quality.py                      # 8 one-minute held-out stories, toy profile
    .venv/bin/python bench/bench_ar_quality.py --stories 2 --minutes 60   # hour-long stories (LT consistency)

For each story (`moviedreamer toyworld story --seed S`, seeds 5000+ are never used for training), the pipeline plans
and renders keyframes only (AR → keyframe decoder). Variants:
  truth          the toy renderer's frame 0 of every shot (the upper bound of every figure)
  with faces     the story plus one reference face per character (a ground-truth frame of its first solo shot)
  without faces  the story as written (no face embeddings in the AR sheet nor the keyframe decoder)
Figures: judge accuracy (scene, exact character set, both) per shot; face-embedding consistency of each character
over its solo shots, adjacent appearances (ST) and all pairs (LT), averaged over characters (eval/metrics.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_story(path: Path, minutes: float, seed: int, size: int) -> None:
    from moviedreamer.toyworld.story import generate_story
    from moviedreamer.toyworld.story import write_story as save

    save(generate_story(minutes, seed, resolution=(size, size)), path)


def add_reference_faces(story_path: Path) -> Path:
    """A copy of the story whose characters each get a reference face: the truth frame of their first solo shot."""
    import yaml
    from PIL import Image

    from moviedreamer.script import load_story
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.story import read_story_params

    loaded = load_story(story_path)
    params = read_story_params(loaded)
    raw = yaml.safe_load(story_path.read_text())
    refs = story_path.parent / f"{story_path.stem}_refs"
    refs.mkdir(exist_ok=True)
    shots = [shot for _, _, _, shot in loaded.story.shots()]
    for char in raw["characters"]:
        solo = next((i for i, s in enumerate(shots) if list(s.characters) == [char["id"]]), None)
        if solo is None:
            continue
        frame = render_frame(params[solo], 0, loaded.story.fps, tuple(loaded.story.resolution)).image
        Image.fromarray(frame).save(refs / f"{char['id']}.png")
        char["faces"] = [f"{refs.name}/{char['id']}.png"]
    out = story_path.with_name(f"{story_path.stem}_faces.yaml")
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def truth_keyframes(loaded) -> np.ndarray:
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.story import read_story_params

    return np.stack([render_frame(p, 0, loaded.story.fps, tuple(loaded.story.resolution)).image for p in read_story_params(loaded)])


def planned_keyframes(pipeline, loaded, out: Path) -> np.ndarray:
    import json

    from PIL import Image

    pipeline(loaded, out, keyframes_only=True, quiet=True)
    shots = json.loads((out / "manifest.json").read_text())["shots"]
    return np.stack([np.asarray(Image.open(out / s["keyframe"]).convert("RGB")) for s in shots])


def score(loaded, keyframes, faces) -> dict:
    from moviedreamer.eval import metrics
    from moviedreamer.eval.run import Evaluation, judge_keyframes

    ev = Evaluation("bench", per_shot=[{"index": i} for i in range(len(keyframes))])
    judge_keyframes(ev, loaded, keyframes)
    appearances: dict[str, list] = {}
    for (_, _, _, shot), frame in zip(loaded.story.shots(), keyframes):
        if len(shot.characters) == 1:
            found = faces.detect_and_embed(frame)
            if found:
                biggest = max(found, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
                appearances.setdefault(shot.characters[0], []).append(np.asarray(biggest.embedding))
    per_char = [metrics.consistency(a) for a in appearances.values() if len(a) > 1]
    return {**ev.metrics["judge"], "st": [c["st"] for c in per_char], "lt": [c["lt"] for c in per_char],
            "found": sum(len(a) for a in appearances.values())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stories", type=int, default=8)
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=5000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--profile", default="toy")
    args = p.parse_args()

    from moviedreamer.encoders import load_encoders
    from moviedreamer.pipeline.movie import MovieDreamerPipeline
    from moviedreamer.registry import Registry
    from moviedreamer.script import load_story

    pipeline = MovieDreamerPipeline.from_profile(args.profile, device="cpu")
    faces = load_encoders(Registry.load(args.profile)).faces
    totals: dict[str, list[dict]] = {"truth": [], "with faces": [], "without faces": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.stories):
            path = Path(tmp) / f"story{k}.yaml"
            write_story(path, args.minutes, args.seed + k, args.size)
            plain, with_faces = load_story(path), load_story(add_reference_faces(path))
            totals["truth"].append(score(plain, truth_keyframes(plain), faces))
            totals["with faces"].append(score(with_faces, planned_keyframes(pipeline, with_faces, Path(tmp) / f"f{k}"), faces))
            totals["without faces"].append(score(plain, planned_keyframes(pipeline, plain, Path(tmp) / f"n{k}"), faces))
            print(f"story {k + 1}/{args.stories}: {len(plain.story.shots())} shots", flush=True)

    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    print(f"\n{args.stories} held-out stories of {args.minutes:g} min (seeds {args.seed}..), profile {args.profile}")
    print(f"{'variant':<14} {'scene':>6} {'chars':>6} {'both':>6} {'ST cos':>7} {'LT cos':>7} {'faces found':>11}")
    for name, rows in totals.items():
        print(f"{name:<14} {mean([r['scene'] for r in rows]):>6.3f} {mean([r['characters'] for r in rows]):>6.3f} "
              f"{mean([r['scene_and_characters'] for r in rows]):>6.3f} {mean(sum((r['st'] for r in rows), [])):>7.3f} "
              f"{mean(sum((r['lt'] for r in rows), [])):>7.3f} {sum(r['found'] for r in rows):>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
