"""AR planner quality on held-out toy stories: script fidelity and character consistency of the planned keyframes,
with and without reference faces, next to the ground-truth renders. Prints; asserts nothing.

    .venv/bin/python bench/bench_ar_quality.py                      # 8 one-minute held-out stories, toy profile
    .venv/bin/python bench/bench_ar_quality.py --stories 2 --minutes 60   # hour-long stories (LT consistency)

For each story (`moviedreamer toyworld story --seed S`, seeds 5000+ are never used for training), the pipeline plans
and renders keyframes only (AR → keyframe decoder). Variants:
  truth          the toy renderer's frame 0 of every shot (the upper bound of every figure)
  with faces     the story plus one reference face per character (a ground-truth portrait crop from a solo shot)
  without faces  the story as written (no face embeddings in the AR sheet nor the keyframe decoder)
Figures: judge accuracy (scene, exact character set, both) per shot; face-embedding consistency of each character
over its solo shots, adjacent appearances (ST) and all pairs (LT), averaged over characters (eval/metrics.py).

Few-shot (--few-shot N): in N stories the character with the most solo shots is restyled (its clothes take another
colour); 10 ground-truth frames of its restyled solo shots become the story's `references:`. On its other solo
shots, the fraction of keyframes that take the restyled look is printed with and without the references. The look
is read by the toy CLIP: the image is closer to the restyled description than to the written one (the same rule on
ground-truth renders of both looks gives the classifier's own accuracy, printed alongside).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_story(path: Path, minutes: float, seed: int, size: int) -> None:
    from moviedreamer.toyworld.story import generate_story
    from moviedreamer.script.write import write_story as save

    save(generate_story(minutes, seed, resolution=(size, size)), path)


def add_reference_faces(story_path: Path) -> Path:
    """A copy of the story whose characters each get a reference face: a portrait crop (twice the face box, 128 px)
    of the ground-truth frame of their solo shot where the face is largest."""
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
    size, fps = tuple(loaded.story.resolution), loaded.story.fps
    for char in raw["characters"]:
        frames = [render_frame(params[i], 0, fps, size) for i, s in enumerate(shots) if list(s.characters) == [char["id"]]]
        frames = [f for f in frames if char["id"] in f.face_boxes]
        if not frames:
            continue
        best = max(frames, key=lambda f: (f.face_boxes[char["id"]][2] - f.face_boxes[char["id"]][0]))
        x0, y0, x1, y1 = best.face_boxes[char["id"]]
        m = max(x1 - x0, y1 - y0)  # a square crop of twice the face, upscaled like a reference portrait
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        Image.fromarray(best.image).crop((int(cx - m), int(cy - m), int(cx + m), int(cy + m))).resize((128, 128), Image.BICUBIC).save(refs / f"{char['id']}.png")
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

    manifest = pipeline(loaded, out, keyframes_only=True, quiet=True).manifest  # a preview: OUT/preview/manifest.json
    shots = json.loads(manifest.read_text())["shots"]
    return np.stack([np.asarray(Image.open(manifest.parent / s["keyframe"]).convert("RGB")) for s in shots])


def planned_tokens(out: Path) -> dict[int, torch.Tensor]:
    """Shot index -> the keyframe tokens the planner predicted (the pipeline's state/plan units)."""
    from moviedreamer.safeio import load_safetensors

    return {int(f.name[:6]): load_safetensors(f)["tokens"].float() for f in (out / "state" / "plan").glob("*.safetensors")}


def score(loaded, keyframes, faces) -> dict:
    from moviedreamer import metrics
    from moviedreamer.eval.run import Evaluation, judge_keyframes, solo_appearances

    ev = Evaluation("bench", per_shot=[{"index": i} for i in range(len(keyframes))])
    judge_keyframes(ev, loaded, keyframes)
    appearances = solo_appearances(faces, [shot.characters for _, _, _, shot in loaded.story.shots()], keyframes)
    per_char = [metrics.consistency(a) for a in appearances.values() if len(a) > 1]
    return {**ev.metrics["judge"], "st": [c["st"] for c in per_char], "lt": [c["lt"] for c in per_char],
            "found": sum(len(a) for a in appearances.values())}


RESTYLE = {"blue": "green", "red": "yellow", "purple": "orange", "green": "red", "orange": "purple"}


def restyle_colour(colour: str) -> str:
    """The new clothes colour: RESTYLE's, else the toy colour farthest from the old one in RGB."""
    from moviedreamer.toyworld.world import COLOURS

    if colour in RESTYLE:
        return RESTYLE[colour]
    old = np.array(COLOURS[colour], float)
    return max((c for c in COLOURS if c != colour), key=lambda c: float(np.abs(np.array(COLOURS[c], float) - old).sum()))


def restyled(character_id: str):
    """The catalogue character with other clothes (a context manager: the toy renderer draws it restyled inside)."""
    import contextlib
    import dataclasses

    from moviedreamer.toyworld.grammar import describe_character
    from moviedreamer.toyworld.world import CHARACTER_BY_ID

    original = CHARACTER_BY_ID[character_id]
    new = dataclasses.replace(original, clothes_colour=restyle_colour(original.clothes_colour))

    @contextlib.contextmanager
    def drawn():
        CHARACTER_BY_ID[character_id] = new
        try:
            yield
        finally:
            CHARACTER_BY_ID[character_id] = original

    return describe_character(original), describe_character(new), drawn


def few_shot(pipeline, path: Path, vision, descriptor, n_refs: int = 10) -> tuple[list[bool], ...]:
    """Per evaluated shot: restyled look of the decoded keyframe without references, with references; the toy CLIP's
    look classifier correct on truth renders; the planned tokens closer to the restyled render's tokens than to the
    written look's, without and with references (the AR model alone, before the decoder reads the descriptions)."""
    import yaml
    from PIL import Image

    from moviedreamer.script import load_story
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.story import read_story_params

    loaded = load_story(path)
    shots = [shot for _, _, _, shot in loaded.story.shots()]
    solo = {}
    for i, s in enumerate(shots):
        if len(s.characters) == 1:
            solo.setdefault(s.characters[0], []).append(i)
    char, idx = max(solo.items(), key=lambda kv: len(kv[1]))
    if len(idx) <= n_refs:
        return [], [], []
    written, new_text, drawn = restyled(char)
    params, size, fps = read_story_params(loaded), tuple(loaded.story.resolution), loaded.story.fps
    with drawn():
        new_truth = {i: render_frame(params[i], 0, fps, size).image for i in idx}
    old_truth = {i: render_frame(params[i], 0, fps, size).image for i in idx}
    refs, test = idx[:n_refs], idx[n_refs:]
    raw = yaml.safe_load(path.read_text())
    (path.parent / "fewshot").mkdir(exist_ok=True)
    raw["references"] = []
    for i in refs:
        Image.fromarray(new_truth[i]).save(path.parent / "fewshot" / f"ref{i}.png")
        raw["references"].append(f"fewshot/ref{i}.png")
    with_refs = path.with_name(f"{path.stem}_refs.yaml")
    with_refs.write_text(yaml.safe_dump(raw, sort_keys=False))
    texts = descriptor.encode([written, new_text]).embeddings.float()
    texts = texts / texts.norm(dim=-1, keepdim=True)

    def looks_restyled(frames):
        img = vision.encode_image(np.stack(frames))[0].float()
        img = img / img.norm(dim=-1, keepdim=True)
        sim = img @ texts.T
        return (sim[:, 1] > sim[:, 0]).tolist()

    plain = planned_keyframes(pipeline, loaded, path.parent / "fs_plain")
    refd = planned_keyframes(pipeline, load_story(with_refs), path.parent / "fs_refs")
    truth_ok = looks_restyled([new_truth[i] for i in test]) + [not x for x in looks_restyled([old_truth[i] for i in test])]

    encode = pipeline.c.keyframes.tokenizer.encode
    as_batch = lambda frames: torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # noqa: E731
    new_tok, old_tok = encode(as_batch([new_truth[i] for i in test])), encode(as_batch([old_truth[i] for i in test]))

    def tokens_restyled(out: Path) -> list[bool]:
        planned = planned_tokens(out)
        pred = torch.stack([planned[i] for i in test])
        return ((pred - new_tok).flatten(1).norm(dim=1) < (pred - old_tok).flatten(1).norm(dim=1)).tolist()

    return (looks_restyled([plain[i] for i in test]), looks_restyled([refd[i] for i in test]), truth_ok,
            tokens_restyled(path.parent / "fs_plain"), tokens_restyled(path.parent / "fs_refs"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stories", type=int, default=8)
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=5000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--profile", default="toy")
    p.add_argument("--few-shot", type=int, default=0, metavar="N", help="also the few-shot figure over N 10-minute stories")
    p.add_argument("--keyframe-candidates", type=int, nargs="*", default=None, metavar="K",
                   help="one 'with faces' row per reranking width K (default: the profile's decoder setting)")
    args = p.parse_args()

    from moviedreamer.pipeline.profile import Profile
    from moviedreamer.pipeline.movie import MovieDreamerPipeline
    from moviedreamer.registry import Registry
    from moviedreamer.script import load_story

    from moviedreamer.pipeline.loading import keyframe_renderer

    pipeline = MovieDreamerPipeline.from_profile(args.profile, device="cpu")
    faces = Profile(Registry.load(args.profile)).faces
    default = pipeline.c.keyframes
    widths = {("with faces" if k is None else f"with faces, K={k}"): k for k in (args.keyframe_candidates or [None])}
    renderers = {name: default if k is None else keyframe_renderer(default.tokenizer, faces, k) for name, k in widths.items()}
    totals: dict[str, list[dict]] = {"truth": [], **{name: [] for name in widths}, "without faces": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.stories):
            path = Path(tmp) / f"story{k}.yaml"
            write_story(path, args.minutes, args.seed + k, args.size)
            plain, with_faces = load_story(path), load_story(add_reference_faces(path))
            totals["truth"].append(score(plain, truth_keyframes(plain), faces))
            for j, (name, renderer) in enumerate(renderers.items()):
                pipeline.c.keyframes = renderer
                totals[name].append(score(with_faces, planned_keyframes(pipeline, with_faces, Path(tmp) / f"f{k}_{j}"), faces))
            pipeline.c.keyframes = default
            totals["without faces"].append(score(plain, planned_keyframes(pipeline, plain, Path(tmp) / f"n{k}"), faces))
            print(f"story {k + 1}/{args.stories}: {len(list(plain.story.shots()))} shots", flush=True)

    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    if args.stories:
        print(f"\n{args.stories} held-out stories of {args.minutes:g} min (seeds {args.seed}..), profile {args.profile}")
        print(f"keyframe reranking: up to {default.candidates} candidates per shot by default (accept {default.accept:g})")
        print(f"{'variant':<14} {'scene':>6} {'chars':>6} {'both':>6} {'ST cos':>7} {'LT cos':>7} {'faces found':>11}")
        for name, rows in totals.items():
            print(f"{name:<14} {mean([r['scene'] for r in rows]):>6.3f} {mean([r['characters'] for r in rows]):>6.3f} "
                  f"{mean([r['scene_and_characters'] for r in rows]):>6.3f} {mean(sum((r['st'] for r in rows), [])):>7.3f} "
                  f"{mean(sum((r['lt'] for r in rows), [])):>7.3f} {sum(r['found'] for r in rows):>11}")
    if args.few_shot:
        encoders = Profile(Registry.load(args.profile))
        plain, refd, truth, tok_plain, tok_refd = [], [], [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            for k in range(args.few_shot):
                folder = Path(tmp) / f"fs{k}"
                folder.mkdir()
                write_story(folder / "story.yaml", 10, args.seed + 100 + k, args.size)
                a, b, c, d, e = few_shot(pipeline, folder / "story.yaml", encoders.vision, encoders.descriptor)
                plain, refd, truth, tok_plain, tok_refd = plain + a, refd + b, truth + c, tok_plain + d, tok_refd + e
        print(f"\nfew-shot over {args.few_shot} 10-minute stories, {len(plain)} evaluated shots of the restyled character:")
        print(f"  restyled look without references {mean(plain):.3f}, with 10 references {mean(refd):.3f}"
              f" (look classifier on ground-truth renders: {mean(truth):.3f} correct)")
        print(f"  planned tokens closer to the restyled render's than to the written look's: without references "
              f"{mean(tok_plain):.3f}, with {mean(tok_refd):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
