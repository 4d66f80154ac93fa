"""`moviedreamer eval OUT_DIR|MOVIE.mp4 [--story STORY.yaml] [--compare OTHER]`"""

from __future__ import annotations

from pathlib import Path

HELP = "score a movie against its story: action, frame distance and decay (toy referee), consistency, CLIP score, flicker, judge → metrics.json + report.html"


def add_arguments(p) -> None:
    p.add_argument("movie", type=Path, help="a generate-movie output folder, or an .mp4")
    p.add_argument("--story", type=Path, help="the story the movie was made from (read from the folder's manifest if omitted)")
    p.add_argument("--compare", type=Path, action="append", default=[], help="another movie of the same story to show side by side (repeatable)")
    p.add_argument("-o", "--output", type=Path, help="where to write metrics.json and report.html (default: OUT_DIR/eval or MOVIE.eval/)")
    p.add_argument("--profile", help="model profile for the face and CLIP encoders (default: toy)")


def run(args) -> int:
    from moviedreamer.eval.report import write_report
    from moviedreamer.eval.run import evaluate

    inputs = [args.movie] + args.compare
    evaluations, strips = {}, {}
    for path in inputs:
        name = path.name if path.name not in evaluations else str(path)
        ev = evaluate(path, args.story, args.profile)
        evaluations[name], strips[name] = ev.to_json(), ev.strips
    out = args.output or (args.movie / "eval" if args.movie.is_dir() else args.movie.with_suffix(".eval"))
    report = write_report(out, evaluations, strips)
    for name, e in evaluations.items():
        m = e["metrics"]
        judge = "n/a" if not m.get("judge") else f"{m['judge']['scene_and_characters']:.3f}"
        clip = "n/a" if m.get("clip_score") is None else f"{m['clip_score']:.2f}"
        ref = m.get("referee")
        refs = "n/a" if not ref else (f"action {ref['action_accuracy']:.3f}, direction {_fmt(ref['direction_accuracy'])}, camera {ref['camera_move_accuracy']:.3f}, "
                                      f"frame distance {ref['frame_distance']:.4f} (floor {_fmt(ref['frame_distance_floor'])}), decay {ref['decay']:.2f}")
        mr = m.get("motion_reference")
        follows = "" if not mr else (f"; {mr['shots']} shots with a motion reference: flow follow {mr['flow_follow']:.3f}"
                                     + (f", action agreement {mr['action_agreement']:.3f}" if "action_agreement" in mr else ""))
        print(f"{name}: flicker {m['flicker']:.4f}, motion {m['motion_px_per_frame']:.3f} px/frame (diagnostic), judge {judge}, CLIP score {clip}; "
              f"referee: {refs}{follows}")
    print(f"wrote {out / 'metrics.json'} and {report}")
    return 0


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"
