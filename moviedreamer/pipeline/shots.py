"""What `generate-movie` checks and says about the shots it makes, without loading any model: the `--shots A:B` range
and the length of what was written, stated exactly (a 0.125 s movie is "0.125 s", not "0 s")."""

from __future__ import annotations

from moviedreamer.errors import UserError


def parse_shots(spec: str | None, n: int) -> tuple[int, int] | None:
    """'A:B' → (A, B) with Python slice semantics (either side may be empty)."""
    if not spec:
        return None
    try:
        a, b = spec.split(":")
        first, last = int(a) if a else 0, int(b) if b else n
    except ValueError:
        raise UserError(f"--shots: expected A:B (e.g. 3:10), found {spec!r}") from None
    if not 0 <= first < last <= n:
        raise UserError(f"--shots: expected 0 ≤ A < B ≤ {n} (the story has {n} shots), found {spec!r}")
    return first, last


def format_seconds(seconds: float) -> str:
    """Seconds to the millisecond, without trailing zeros: 27 → '27 s', 0.125 → '0.125 s', 3 frames at 24 fps → '0.125 s'."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text} s"


def format_length(frames: int, fps: int) -> str:
    """A movie's length as written: '27 s (216 frames at 8 fps)'; minutes are added from one minute on."""
    seconds = frames / fps
    minutes = f", {int(seconds // 60)} min {format_seconds(seconds % 60)}" if seconds >= 60 else ""
    return f"{format_seconds(seconds)}{minutes} ({frames} frame{'s' if frames != 1 else ''} at {fps} fps)"


def describe_run(timeline, shots: tuple[int, int] | None, keyframes_only: bool, fps: int) -> str:
    """What a run made, for its closing line: 'the movie, 27 s (…)', 'a preview of shots 2–3, 0.5 s (…)' …"""
    first, last = shots or (0, len(timeline))
    made = timeline[first:last]
    what = "the movie" if (first, last) == (0, len(timeline)) else (f"a preview of shot {first}" if last - first == 1 else f"a preview of shots {first}–{last - 1}")
    if keyframes_only:
        return f"the keyframes and storyboard of {len(made)} shot{'s' if len(made) != 1 else ''} (no clips)"
    return f"{what}, {format_length(sum(s.n_frames for s in made), fps)}"
