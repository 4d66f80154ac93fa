"""Crash-resume under SIGKILL: a 20-shot movie killed at random moments and resumed until it completes, against one
uninterrupted run of the same story.

    .venv/bin/python bench/bench_faults.py                         # 20 shots, at least 20 kills, seed 0
    .venv/bin/python bench/bench_faults.py --shots 20 --kills 40 --seed 1 --keep out/faults

Every run is a fresh process of `tests/pipeline_standins.py STORY OUT DELAY` (the pipeline's own code path through
`MovieDreamerPipeline`: output folder, lock, units, publication; the models are the deterministic numpy stand-ins, so
the bench costs seconds of CPU, not hours). The reference run's wall time T is measured first; then each attempt is
killed with SIGKILL unless it finishes first: after a random delay uniform in [0, T] (3 attempts in 4), or (1 in 4)
0-20 ms after its first staged output appears, so that kills also land inside the short window where the storyboard,
movie and manifest are published. A folder that completes is checked and a
new folder started, until at least `--kills` kills have landed. Checked after every completed folder: the movie's
frames equal the reference's, the manifest agrees with the movie and names units that exist, and no partial, staged or
journal file is left. Where each kill landed is read from the folder right after it (units present, staged outputs).
Prints figures; asserts nothing (exit status 1 if any folder differs from the reference).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RUNNER = REPO / "tests" / "pipeline_standins.py"


def write_story(folder: Path, shots: int) -> Path:
    lines = ["title: Fault Bench", "fps: 8", "resolution: [64, 64]", "seed: 11", "characters:",
             "  - {id: mia, name: Mia, description: a girl with a round orange face}", "scenes:"]
    for s in range(2):
        lines += [f"  - id: scene{s}", "    setting: a sunny beach", "    shots:"]
        for t in range(shots // 2):
            k = s * (shots // 2) + t
            extra = ", transition: continuous" if k % 7 == 3 else ""
            lines.append(f"      - {{duration: 1, characters: [mia], action: Mia walks step {k}, camera: wide shot{extra}}}")
    path = folder / "story.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start(story: Path, out: Path, delay: float) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(RUNNER), str(story), str(out), str(delay)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def unit_counts(out: Path) -> dict[str, int]:
    return {kind: len([p for p in (out / "state" / kind).glob("*") if ".partial" not in p.name]) if (out / "state" / kind).is_dir() else 0
            for kind in ("plan", "keyframes", "clips")}


def staging(out: Path) -> bool:
    from moviedreamer.pipeline.publish import JOURNAL

    return (out / JOURNAL).exists() or bool(list(out.glob("*.publishing*")) or list(out.glob("shots/*.publishing*")))


def phase(out: Path, shots: int, before: dict[str, int]) -> str:
    """Where a killed run was, from what it left (`before`: the units there when it started)."""
    from moviedreamer.pipeline.publish import JOURNAL

    if not out.exists():
        return "before the folder"
    if (out / JOURNAL).exists():
        return "publishing (journal written)"
    if staging(out):
        return "publishing (staging)"
    counts = unit_counts(out)
    if counts == before and sum(counts.values()) < 3 * shots:
        return "start-up or replay (nothing new written)"
    if counts["plan"] < shots:
        return "planning" if counts["plan"] else "before the first unit"
    if counts["keyframes"] < shots:
        return "keyframes"
    if counts["clips"] < shots:
        return "clips"
    return "after publishing (exiting)" if (out / "manifest.json").exists() else "assembling"


def check(out: Path, reference: np.ndarray) -> list[str]:
    """What is wrong with a completed folder (empty: nothing)."""
    from moviedreamer.media import read_frames

    problems = []
    frames = np.stack(list(read_frames(out / "movie.mp4")))
    if frames.shape != reference.shape or not np.array_equal(frames, reference):
        problems.append("movie frames differ from the uninterrupted run")
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest["frames"] != len(frames) or not manifest["complete"]:
        problems.append("manifest disagrees with movie.mp4")
    for shot in manifest["shots"]:
        if not all((out / rel).is_file() for rel in shot["units"].values()) or not (out / shot["clip"]).is_file():
            problems.append(f"shot {shot['index']}: a file the manifest names is missing")
    if not all((out / name).is_file() for name in manifest["storyboard"]):
        problems.append("a storyboard page the manifest names is missing")
    left = [p.name for p in out.rglob("*") if ".partial" in p.name or ".publishing" in p.name or p.name == ".moviedreamer-publish.json"]
    if left:
        problems.append(f"leftovers: {left[:3]}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=20)
    ap.add_argument("--kills", type=int, default=20, help="kills to land at least (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.02, help="the stand-in clip renderer's seconds per frame (default 0.02)")
    ap.add_argument("--keep", type=Path, help="keep the folders here (default: a temporary folder, removed)")
    args = ap.parse_args()
    from moviedreamer.media import read_frames

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    story = write_story(work, args.shots)
    reference_dir = work / "reference"
    shutil.rmtree(reference_dir, ignore_errors=True)
    t0 = time.perf_counter()
    proc = start(story, reference_dir, args.delay)
    if proc.wait() != 0:
        print(proc.stderr.read(), file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    reference = np.stack(list(read_frames(reference_dir / "movie.mp4")))
    print(f"reference: {args.shots} shots, {len(reference)} frames, uninterrupted run {wall:.1f} s wall (one process, OMP_NUM_THREADS=1)")

    rng = random.Random(args.seed)
    kills, phases, rounds, attempts, bad = 0, Counter(), [], 0, []
    t_bench = time.perf_counter()
    while kills < args.kills:
        out = work / f"round-{len(rounds):02d}"
        shutil.rmtree(out, ignore_errors=True)
        round_kills = 0
        while True:
            attempts += 1
            before = unit_counts(out) if out.exists() else {}
            at_publication = rng.random() < 0.25
            after = rng.uniform(0.0, 0.02) if at_publication else rng.uniform(0.0, wall)
            proc = start(story, out, args.delay)
            if at_publication:  # wait for the first staged output, then kill within 20 ms
                while proc.poll() is None and not (out.exists() and staging(out)):
                    time.sleep(0.002)
            try:
                proc.wait(timeout=after)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
                round_kills += 1
                phases[phase(out, args.shots, before)] += 1
                continue
            if proc.returncode != 0:
                bad.append(f"{out.name}: a resumed run failed: {proc.stderr.read().strip().splitlines()[-1:]}")
                break
            problems = check(out, reference)
            bad += [f"{out.name}: {p}" for p in problems]
            rounds.append((round_kills, not problems))
            break
        if len(rounds) > 4 * args.kills:  # every attempt finishing before its kill: a wall time misread
            break
    bench_wall = time.perf_counter() - t_bench
    identical = sum(ok for _, ok in rounds)
    print(f"kills: {kills} SIGKILLs in {attempts} runs over {len(rounds)} folders ({bench_wall:.0f} s); each folder resumed until complete")
    print("where the kills landed: " + ", ".join(f"{name} {n}" for name, n in phases.most_common()))
    print(f"kills per folder: {', '.join(str(k) for k, _ in rounds)}")
    print(f"result: {identical} of {len(rounds)} completed folders identical to the uninterrupted run (frames, manifest, "
          f"storyboard, no leftovers)" + ("" if not bad else f"; problems: {bad[:5]}"))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
