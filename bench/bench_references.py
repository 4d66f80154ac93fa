"""Few-shot personalization: do a character's reference frames (`characters[].references:`) decide how it is drawn?

Held-out stories (fresh seeds), one character of each (the target: in two shots or more) given 2 reference frames —
portraits the toy world renders of it — in two uses:

- **restyle**: a catalogue character shown in other clothes / clothes colour / hat than its description says; the
  checked attributes are the changed ones (the references must win over the text);
- **new**: a compositional character (none of the twelve) whose description is cut to its kind ("a robot"), shown
  only in the references; the checked attributes are kind, head colour, clothes, clothes colour and hat.

Each story's keyframes are planned and rendered by the profile (keyframes only) with and without the references, side
by side, and the compositional frame judge reads the target in every shot the truth shows it: "as referenced" is the
share of those shots whose checked attributes are all read as referenced. Beside them: the truth (the story rendered
with the referenced look: must score near 1), noise frames (near 0), the other characters' scene + character fidelity
with and without references, and the target's face consistency (ST / LT) over its solo shots.

    .venv/bin/python bench/bench_references.py --stories 4 --minutes 0.5 --out runs/bench-references
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from moviedreamer import load_story
from moviedreamer.eval.run import solo_appearances
from moviedreamer.metrics import consistency, judge_fidelity
from moviedreamer.script.write import write_story
from moviedreamer.toyworld.look_judge import drawn, slot_order
from moviedreamer.toyworld.render import render_frame
from moviedreamer.toyworld.story import generate_story, read_story_params
from moviedreamer.toyworld.world import CHARACTER_IDS, character
from moviedreamer.train.stages.ar_references import KIND_WORDS, RESTYLED, changed_look, portrait, story_to_world_ids

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compose import story_bench_setup  # noqa: E402

SEED = 93_000_000  # far from every training stream
NEW_CHECKED = ("kind", "head_colour", "clothes", "clothes_colour", "hat")


def held_out_case(use: str, seed: int, minutes: float):
    """(story dict, target's script id, its world id, referenced look, checked attributes) for one use."""
    rng = np.random.default_rng(seed)
    for attempt in range(100):
        story = generate_story(minutes, seed + 1000 * attempt, cast_size=3, composed=use == "new", title=f"{use} {seed}")
        counts: dict[str, int] = {}
        for scene in story["scenes"]:
            for shot in scene["shots"]:
                for c in shot["characters"]:
                    counts[c] = counts.get(c, 0) + 1
        targets = sorted(c for c, n in counts.items() if n >= 2)
        if not targets:
            continue
        sid = targets[int(rng.integers(len(targets)))]
        entry = next(c for c in story["characters"] if c["id"] == sid)
        if use == "restyle" and sid not in CHARACTER_IDS:
            continue
        if use == "new" and sid in CHARACTER_IDS:
            continue
        return story, sid, entry, rng
    raise RuntimeError(f"no held-out story for {use} in 100 tries")


def as_referenced(preds, truth_frames, world_id: str, look, checked) -> tuple[int, int]:
    """(shots whose target is read with every checked attribute as referenced, shots the truth shows it in)."""
    hits = total = 0
    for p, f in zip(preds, truth_frames):
        order = slot_order(f)
        if world_id not in order:
            continue
        total += 1
        looks = p.get("looks", [])
        if len(looks) == len(order) and all(looks[order.index(world_id)][k] == drawn(look, k) for k in checked):
            hits += 1
    return hits, total


def run_case(pipe, judge, faces, use: str, k: int, seed: int, minutes: float, out: Path, noise_rng) -> dict:
    story, sid, entry, rng = held_out_case(use, seed, minutes)
    folder = out / f"{use}-{k}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    write_story(story, folder / "truth.yaml")
    truth_loaded = load_story(folder / "truth.yaml")
    params = read_story_params(truth_loaded)
    world_id = story_to_world_ids(truth_loaded.story, params)[sid]
    look = changed_look(character(world_id), rng) if use == "restyle" else character(world_id)
    checked = [key for key in RESTYLED if getattr(look, key) != getattr(character(world_id), key)] if use == "restyle" else list(NEW_CHECKED)
    fps, size = truth_loaded.story.fps, tuple(truth_loaded.story.resolution)
    refs = []
    for i in range(2):
        Image.fromarray(render_frame(portrait(world_id, rng), 0, fps, size, looks={world_id: look}).image).save(folder / "refs" / f"{sid}_{i}.png")
        refs.append(f"refs/{sid}_{i}.png")
    if use == "new":
        entry["description"] = KIND_WORDS[look.kind]
    truth = np.stack([render_frame(p, 0, fps, size, looks={world_id: look}).image for p in params])
    truth_frames = [render_frame(p, 0, fps, size, looks={world_id: look}) for p in params]
    cast = sorted({c for p in params for c in p.characters})
    row: dict[str, dict] = {}
    sources = {"truth": truth, "noise": noise_rng.integers(0, 256, truth.shape, dtype=np.uint8)}
    for name, with_refs in (("with references", True), ("without", False)):
        entry["references"] = refs if with_refs else []
        write_story(story, folder / f"{name.split()[0]}.yaml")
        loaded = load_story(folder / f"{name.split()[0]}.yaml")
        result = pipe(loaded, folder / f"out-{name.split()[0]}", keyframes_only=True, quiet=True)
        sources[name] = np.stack([result.keyframe(i) for i in range(len(params))])
    for name, frames in sources.items():
        preds = judge.predict(frames, cast=cast)
        hits, total = as_referenced(preds, truth_frames, world_id, look, checked)
        others = [(p, {"scene": t.scene, "characters": f.visible, "order": slot_order(f)})
                  for p, t, f in zip(preds, params, truth_frames) if world_id not in t.characters]
        fidelity = judge_fidelity([p for p, _ in others], [t for _, t in others])["scene_and_characters"] if others else None
        apps = solo_appearances(faces, [p.characters for p in params], frames).get(world_id, [])
        cons = consistency(apps) if apps else {"st": None, "lt": None}
        row[name] = {"hits": hits, "shots": total, "others": fidelity, "others_shots": len(others), "st": cons["st"], "lt": cons["lt"]}
    print(f"{use} {k}: target {sid} ({world_id}), checked {checked}: "
          + ", ".join(f"{n} {r['hits']}/{r['shots']}" for n, r in row.items()), flush=True)
    return row


def main(argv=None) -> int:
    args, judge, faces, pipe = story_bench_setup(argv, __doc__, "use", SEED, "runs/bench-references")
    noise_rng = np.random.default_rng(args.seed)
    summary: dict[str, dict] = {}
    for use in ("restyle", "new"):
        rows = [run_case(pipe, judge, faces, use, k, args.seed + 7 * k, args.minutes, args.out, noise_rng) for k in range(args.stories)]
        for name in rows[0]:
            runs = [r[name] for r in rows]
            shots = sum(r["shots"] for r in runs)
            summary[f"{use} / {name}"] = {
                "as_referenced": sum(r["hits"] for r in runs) / shots if shots else None, "target_shots": shots,
                "others_scene_and_characters": _weighted(runs, "others", "others_shots"),
                "st": _mean(runs, "st"), "lt": _mean(runs, "lt")}
    keys = ("as_referenced", "others_scene_and_characters", "st", "lt", "target_shots")
    print(f"\n{'':28s}" + "".join(f"{k:>30s}" for k in keys))
    for name, s in summary.items():
        print(f"{name:28s}" + "".join(f"{_fmt(s[k]):>30s}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


def _weighted(runs, key, weight):
    vals = [(r[key], r[weight]) for r in runs if r.get(key) is not None and r[weight]]
    return sum(v * n for v, n in vals) / sum(n for _, n in vals) if vals else None


def _mean(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def _fmt(v):
    return "n/a" if v is None else (f"{v:d}" if isinstance(v, int) else f"{v:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
