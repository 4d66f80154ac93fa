"""`moviedreamer toyworld ...`: stories, ground-truth movies, training data and the judge."""

from __future__ import annotations

from pathlib import Path

HELP = "the procedural toy world: write stories, render ground truth, make datasets, judge frames and clips"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="toy_command", metavar="ACTION", required=True)
    s = sub.add_parser("story", help="write a random story in the toy vocabulary")
    s.add_argument("--minutes", type=float, default=1.0, help="length of the story (default 1)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--cast", type=int, default=5, help="number of recurring characters (default 5)")
    s.add_argument("--fps", type=int, default=8)
    s.add_argument("--size", type=int, default=128, help="square resolution in pixels (64–256)")
    s.add_argument("-o", "--output", type=Path, required=True, help="the story .yaml to write")

    t = sub.add_parser("truth", help="render the ground-truth movie of a story written in the toy vocabulary")
    t.add_argument("story", type=Path)
    t.add_argument("-o", "--output", type=Path, required=True, help="the .mp4 to write")

    d = sub.add_parser("dataset", help="write sharded training data (docs/data_format.md)")
    d.add_argument("--episodes", type=int, required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--shots", type=int, default=8, help="shots per episode")
    d.add_argument("--clip-frames", type=int, default=8)
    d.add_argument("--size", type=int, default=128)
    d.add_argument("--face-size", type=int, default=64)
    d.add_argument("--composed", type=float, default=0.0,
                   help="share of episodes that cast random compositional characters (with any, face labels are the world's faces)")
    d.add_argument("-o", "--output", type=Path, required=True)

    j = sub.add_parser("judge", help="predict scene, characters and framing for images, a movie, or a movie folder")
    j.add_argument("inputs", nargs="+", type=Path, help="PNG/JPEG frames, .mp4 movies, or a generate-movie output folder")

    tj = sub.add_parser("train-judge", help="train the frame judge (scene, framing, each character's look) on freshly rendered frames; resumable")
    tj.add_argument("--steps", type=int, default=4000)
    tj.add_argument("--batch", type=int, default=64)
    tj.add_argument("--seed", type=int, default=0)
    tj.add_argument("--composed", type=float, default=0.75, help="share of shots that cast random compositional characters")
    tj.add_argument("-o", "--output", type=Path, required=True, help="run folder: checkpoint.pt (resumed when present), train.log, export/ (the judge)")

    e = sub.add_parser("eval-judge", help="measure the judge on fresh renders (seeds never used in training)")
    e.add_argument("--samples", type=int, default=2000)
    e.add_argument("--seed", type=int, default=10_000_000)

    ta = sub.add_parser("train-action-judge", help="train the action judge (action, direction, camera move of a clip) on freshly rendered clips; resumable")
    ta.add_argument("--steps", type=int, default=6000)
    ta.add_argument("--batch", type=int, default=32)
    ta.add_argument("--seed", type=int, default=0)
    ta.add_argument("--threads", type=int, default=1)
    ta.add_argument("-o", "--output", type=Path, required=True, help="run folder: checkpoint/ (resumed when present), train.log, the exported judge")

    v = sub.add_parser("vocabulary", help="every word the toy profile knows, grouped (places, actions, camera, character attributes)")
    v.add_argument("--json", action="store_true", help="print it as JSON")

    ea = sub.add_parser("eval-action-judge", help="measure the action judge on fresh rendered clips (seeds never used in training)")
    ea.add_argument("--samples", type=int, default=2000)
    ea.add_argument("--seed", type=int, default=None, help="default: the judge's held-out evaluation seed")
    ea.add_argument("--mode", choices=["clip", "opening", "slideshow", "keyframe"], default="clip",
                    help="clip: the clips as rendered; slideshow / keyframe: a still frame repeated (the baseline a referee must fail)")
    ea.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std added to the frames (0-1 scale)")
    ea.add_argument("--blur", action="store_true", help="blur the frames (a half-resolution round trip)")
    ea.add_argument("--judge", type=Path, default=None, help="an action judge folder (default: the toy profile's)")


def run(args) -> int:
    return {"story": _story, "truth": _truth, "dataset": _dataset, "judge": _judge, "train-judge": _train_judge, "eval-judge": _eval_judge,
            "train-action-judge": _train_action_judge, "eval-action-judge": _eval_action_judge, "vocabulary": _vocabulary}[args.toy_command](args)


def _vocabulary(args) -> int:
    import json

    from moviedreamer.toyworld.vocabulary import format_vocabulary, vocabulary

    print(json.dumps(vocabulary(), indent=2) if args.json else format_vocabulary())
    return 0


def _story(args) -> int:
    from moviedreamer.errors import UserError
    from moviedreamer.script.write import write_story
    from moviedreamer.toyworld.story import generate_story

    if not 64 <= args.size <= 256 or args.size % 16:
        raise UserError(f"--size: expected 64..256 and a multiple of 16, found {args.size}")
    if args.minutes <= 0 or args.minutes > 24 * 60:
        raise UserError(f"--minutes: expected more than 0 and at most 1440, found {args.minutes:g}")
    story = generate_story(args.minutes, args.seed, cast_size=args.cast, fps=args.fps, resolution=(args.size, args.size))
    write_story(story, args.output)
    n = sum(len(s["shots"]) for s in story["scenes"])
    print(f"wrote {args.output}: {n} shots in {len(story['scenes'])} scenes, {len(story['characters'])} characters")
    return 0


def _truth(args) -> int:
    from moviedreamer.media import ClipWriter
    from moviedreamer.script import load_story
    from moviedreamer.script.timeline import frames_for
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.story import read_story_params

    loaded = load_story(args.story)
    params = read_story_params(loaded)
    story = loaded.story
    width, height = story.resolution
    with ClipWriter(args.output, story.fps, width, height) as writer:
        for p in params:
            for f in range(frames_for(p.duration, story.fps)):
                writer.write(render_frame(p, f, story.fps, (width, height)).image)
    print(f"wrote {args.output}: {writer.frames} frames, {len(params)} shots")
    return 0


def _dataset(args) -> int:
    from moviedreamer.toyworld.dataset import write_dataset

    out = write_dataset(args.output, args.episodes, seed=args.seed, shots=args.shots, clip_frames=args.clip_frames, size=args.size, face_size=args.face_size,
                        composed=args.composed)
    print(f"wrote {args.episodes} episodes to {out}")
    return 0


def _judge(args) -> int:
    from moviedreamer.toyworld.judge import judge_paths

    for line in judge_paths(args.inputs):
        print(line)
    return 0


def _train_judge(args) -> int:
    from moviedreamer.train.fit_look_judge import train_look_judge

    train_look_judge(args.output, steps=args.steps, batch=args.batch, seed=args.seed, composed=args.composed)
    return 0


def _eval_judge(args) -> int:
    from moviedreamer.toyworld.judge import load_judge
    from moviedreamer.toyworld.look_judge_data import evaluate_look_judge

    judge = load_judge()
    for name, share in (("composed characters", 1.0), ("catalogue characters", 0.0)):
        scores = evaluate_look_judge(judge, args.samples, args.seed, composed=share)
        print(f"{name}: " + " ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    return 0


def _train_action_judge(args) -> int:
    from moviedreamer.train.fit_action_judge import train_action_judge

    train_action_judge(args.output, steps=args.steps, batch=args.batch, seed=args.seed, threads=args.threads)
    return 0


def _eval_action_judge(args) -> int:
    from moviedreamer.toyworld.action_judge import EVAL_SEED, evaluate_action_judge, load_action_judge

    seed = EVAL_SEED if args.seed is None else args.seed
    scores = evaluate_action_judge(load_action_judge(args.judge), args.samples, seed, mode=args.mode, noise=args.noise, blur=args.blur)
    print(" ".join(f"{k}={v:.4f}" for k, v in scores.items() if isinstance(v, float)))
    return 0
