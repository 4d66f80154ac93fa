"""generate-movie over stories of growing length: speed and peak memory. Prints; asserts nothing.

    .venv/bin/python bench/bench_movie.py                          # toy profile, 1- and 10-minute toy stories
    .venv/bin/python bench/bench_movie.py --minutes 1 10 60 --ranks 2   # the hour-long acceptance run (hours on a CPU)
    .venv/bin/python bench/bench_movie.py --minutes 1 10 60 --keyframes-only
    .venv/bin/python bench/bench_movie.py --profile /tmp/tiny/profile.yaml --size 64   # pipeline/standins.py profile

Each story comes from `moviedreamer toyworld story --minutes M` and is rendered by `moviedreamer generate-movie`
in a fresh process (optionally under `torchrun --nproc_per_node N`), so its peak RSS is its own (os.wait4).
Figures per story: shots, movie seconds, wall seconds, movie-seconds per wall-second, peak RSS (MiB); then the
peak-RSS ratio of the longest story to the shortest (the acceptance target is <= 1.2: memory must not grow with
the movie's length).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run_measured(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB of the process tree's largest member, exit status)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        print(err[-2000:], file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    p.add_argument("--profile", default="toy")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ranks", type=int, default=1, help="torchrun --nproc_per_node (rendering split over processes)")
    p.add_argument("--keyframes-only", action="store_true")
    p.add_argument("--keep", type=Path, help="keep the stories and movies here instead of a temporary folder")
    args = p.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_movie_"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONWARNINGS": "ignore"}
    rows = []
    print(f"profile {args.profile}, {args.size}x{args.size}, {args.ranks} process(es), threads {env['OMP_NUM_THREADS']}, in {work}")
    print(f"{'minutes':>7} {'shots':>6} {'movie s':>8} {'wall s':>8} {'movie-s/wall-s':>15} {'peak RSS MiB':>13}")
    for minutes in args.minutes:
        story = work / f"story_{minutes:g}min.yaml"
        subprocess.run([str(BIN / "moviedreamer"), "toyworld", "story", "--minutes", str(minutes), "--seed", str(args.seed),
                        "--size", str(args.size), "-o", str(story)], check=True, stdout=subprocess.DEVNULL)
        out = work / f"movie_{minutes:g}min"
        cmd = [str(BIN / "moviedreamer")] if args.ranks == 1 else [str(BIN / "torchrun"), "--nproc_per_node", str(args.ranks), "--no-python", str(BIN / "moviedreamer")]
        cmd += ["generate-movie", str(story), "-o", str(out), "--profile", args.profile, "--quiet", "--fresh"]
        cmd += ["--keyframes-only"] if args.keyframes_only else []
        wall, rss, code = run_measured(cmd, env)
        if code:
            print(f"{minutes:>7g} generate-movie failed (exit {code})")
            return 1
        manifest = json.loads((out / "manifest.json").read_text())
        seconds = sum(s["frames"] for s in manifest["shots"]) / manifest["fps"]
        rows.append((minutes, rss))
        print(f"{minutes:>7g} {len(manifest['shots']):>6} {seconds:>8.0f} {wall:>8.1f} {seconds / wall:>15.3f} {rss:>13.0f}", flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    if len(rows) > 1:
        (m0, r0), (m1, r1) = min(rows), max(rows)
        print(f"peak RSS ratio {m1:g} min / {m0:g} min: {r1 / r0:.3f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
