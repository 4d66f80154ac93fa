"""How well the clip stage's progress bar predicts the time left: movie-seconds (the old unit) against denoising work
(the new one, pipeline/progress.py), read from one real generation.

    .venv/bin/python bench/bench_eta.py                                   # stories/toy/lost_kite.yaml, shots 0:6, toy
    .venv/bin/python bench/bench_eta.py --story STORY.yaml --shots 0:4 --profile PATH --keep out/eta
    .venv/bin/python bench/bench_eta.py --events runs/eta.json      # write the recorded progress, or read it back

It renders the story's shots once (fresh, nothing reused) through MovieDreamerPipeline with a callback that records,
after every denoising step and every written frame, the time, the work done and expected in all, and the frames
written. Both units' bars are then replayed through tqdm itself on those same timestamps (a stand-in clock): the old
bar counted movie-seconds with tqdm's default smoothing (0.3), the new one counts work with the bar's own smoothing;
the old unit with the new smoothing is shown too, to tell the unit's share from the smoothing's, and the new bar as it
would be if it knew from the start how many candidates each segment would draw (its total: the work finally done), to
tell the unit's share from the unforeseeable candidates'. At 25 / 50 / 75 % of
the clip stage's wall time it prints each bar's predicted time left against the true time left, and the relative error
(+ = too long); the last column is the largest |error| from 10 to 90 %. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHECKPOINTS = (0.25, 0.50, 0.75)
OLD_SMOOTHING = 0.3  # tqdm's default, what the movie-seconds bar used


def replay(events, value, total, smoothing: float) -> list[tuple[float, float | None]]:
    """(time, ETA in seconds) after each event, as a tqdm bar fed `value(event)` out of `total(event)` would show it."""
    from tqdm import tqdm

    clock = [events[0].time]
    bar = tqdm(total=total(events[0]), file=io.StringIO(), smoothing=smoothing, mininterval=0.1)
    bar._time = lambda: clock[0]  # the recorded timestamps instead of the wall clock
    bar.start_t = bar.last_print_t = clock[0]
    shown, last = [], 0.0
    for e in events:
        clock[0] = e.time
        bar.total = total(e)
        bar.update(value(e) - last)
        last = value(e)
        elapsed = e.time - bar.start_t
        rate = bar.format_dict["rate"] or (bar.n / elapsed if elapsed > 0 and bar.n else None)
        shown.append((e.time, (bar.total - bar.n) / rate if rate else None))
    bar.close()
    return shown


def error_at(shown, t0: float, t_end: float, fraction: float) -> tuple[float | None, float]:
    """(predicted, true) seconds left at `fraction` of the stage: the ETA the bar showed last, counted down since."""
    at = t0 + fraction * (t_end - t0)
    before = [(t, eta) for t, eta in shown if t <= at and eta is not None]
    if not before:
        return None, t_end - at
    t, eta = before[-1]
    return t + eta - at, t_end - at


def record(args, a: int, b: int):
    """Render the shots once, fresh; returns (progress events, fps, wall seconds of the whole call)."""
    import torch

    from moviedreamer import MovieDreamerPipeline, load_story

    torch.set_num_threads(args.threads)
    pipe = MovieDreamerPipeline.from_pretrained(args.profile, device="cpu")
    events = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = pipe(load_story(args.story), args.keep or Path(tmp) / "movie", shots=(a, b), fresh=True, quiet=True, callback=events.append)
        return events, result.fps, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--story", type=Path, default=REPO / "stories/toy/lost_kite.yaml")
    ap.add_argument("--shots", default="0:6", help="A:B, movie order (default 0:6)")
    ap.add_argument("--profile", default="toy")
    ap.add_argument("--keep", type=Path, help="render into this folder (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--events", type=Path, help="a .json of recorded progress: replayed when it exists, else written after the run")
    args = ap.parse_args(argv)

    from moviedreamer.pipeline.progress import SMOOTHING, ClipProgress

    a, b = (int(x) for x in args.shots.split(":"))
    if args.events and args.events.is_file():
        saved = json.loads(args.events.read_text())
        events, fps, wall = [ClipProgress(**e) for e in saved["events"]], saved["fps"], saved["wall"]
    else:
        events, fps, wall = record(args, a, b)
        if args.events:
            args.events.parent.mkdir(parents=True, exist_ok=True)
            args.events.write_text(json.dumps({"fps": fps, "wall": wall, "events": [asdict(e) for e in events]}))
    t0, t_end = events[0].time, events[-1].time
    bars = {
        "movie-s, smoothing 0.3 (old bar)": replay(events, lambda e: e.frames_done / fps, lambda e: e.frames_total / fps, OLD_SMOOTHING),
        f"movie-s, smoothing {SMOOTHING}": replay(events, lambda e: e.frames_done / fps, lambda e: e.frames_total / fps, SMOOTHING),
        f"work, smoothing {SMOOTHING} (new bar)": replay(events, lambda e: e.done, lambda e: e.total, SMOOTHING),
        "work, candidates known (hindsight)": replay(events, lambda e: e.done, lambda e: events[-1].done, SMOOTHING),
    }
    frames = events[-1].frames_total
    print(f"{args.story.name} shots {a}:{b} ({frames} frames, {frames / fps:.0f} movie-s), profile {args.profile}: "
          f"whole run {wall:.1f} s, clip stage {t_end - t0:.1f} s; expected work at the start {events[0].total:.1f}, done {events[-1].done:.1f}")
    print(f"{'unit':38s}" + "".join(f"{f'at {int(f * 100)} %':>24s}" for f in CHECKPOINTS) + f"{'max |err| 10-90 %':>20s}")
    for name, shown in bars.items():
        cells = []
        for f in CHECKPOINTS:
            pred, true = error_at(shown, t0, t_end, f)
            cells.append(f"{'—':>24s}" if pred is None else f"{pred:6.1f} s / {true:5.1f} s {100 * (pred - true) / true:+5.0f} %".rjust(24))
        worst = [abs(p - tr) / tr for p, tr in (error_at(shown, t0, t_end, f / 100) for f in range(10, 91, 2)) if p is not None]
        print(f"{name:38s}" + "".join(cells) + (f"{100 * max(worst):19.0f}%" if worst else f"{'—':>20s}"))
    print("cells: predicted left / true left, relative error (+ = predicted too long)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
