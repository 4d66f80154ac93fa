"""generate-movie over stories of growing length: speed and peak memory. Prints; asserts nothing.

    .venv/bin/python bench/bench_movie.py                          # toy profile, 1- and 10-minute toy stories
    .venv/bin/python bench/bench_movie.py --minutes 1 10 60 --ranks 2   # the hour-long acceptance run (hours on a CPU)
    .venv/bin/python bench/bench_movie.py --minutes 1 10 60 --keyframes-only
    .venv/bin/python bench/bench_movie.py --profile /tmp/tiny/profile.yaml --size 64   # pipeline/standins.py profile

Each story comes from `moviedreamer toyworld story --minutes M` and is rendered by `moviedreamer generate-movie`
in a fresh process (optionally under `torchrun --nproc_per_node N`), so its peak RSS is its own (os.wait4, and the
kernel's high-water mark VmHWM of every process of the tree, read every few seconds).

`--resume` (with `--keep DIR`) makes an hours-long measurement survive the end of a session: a story whose output
folder exists is continued by generate-movie's own resume instead of started afresh, and DIR/bench_runs.json keeps,
per story, each attempt's wall seconds and peak RSS (updated while it runs, so a killed attempt still counts). The
row then reports the wall seconds summed over the attempts and the largest peak.
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


def tree_hwm_mib(pid: int) -> float:
    """Largest VmHWM (peak resident set) among `pid` and its descendants, in MiB (0 if they are gone)."""
    best, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            best = max(best, int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM:"))) / 1024)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return best


def run_measured(cmd: list[str], env: dict, on_tick=None, tick: float = 5.0) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB of the process tree's largest member, exit status); `on_tick(wall, rss)` is
    called every `tick` seconds while it runs."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_file)
        rss = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = max(rss, tree_hwm_mib(proc.pid))
            if on_tick:
                on_tick(time.perf_counter() - t0, rss)
            time.sleep(tick)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err_file.seek(0)
            print(err_file.read().decode(errors="replace")[-2000:], file=sys.stderr)
    return wall, max(rss, usage.ru_maxrss / 1024), proc.returncode


class Ledger:
    """DIR/bench_runs.json: {story: [{"wall": s, "rss": MiB, "finished": bool}, ...]}, written atomically."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def record(self, story: str, wall: float, rss: float, finished: bool, new: bool) -> None:
        runs = self.data.setdefault(story, [])
        if new or not runs:
            runs.append({})
        runs[-1].update(wall=round(wall, 1), rss=round(rss, 1), finished=finished)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)

    def totals(self, story: str) -> tuple[float, float, int]:
        runs = self.data.get(story, [])
        return sum(r["wall"] for r in runs), max((r["rss"] for r in runs), default=0.0), len(runs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    p.add_argument("--profile", default="toy")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ranks", type=int, default=1, help="torchrun --nproc_per_node (rendering split over processes)")
    p.add_argument("--keyframes-only", action="store_true")
    p.add_argument("--keep", type=Path, help="keep the stories and movies here instead of a temporary folder")
    p.add_argument("--resume", action="store_true", help="continue unfinished movies in --keep, summing the attempts' wall time")
    args = p.parse_args()
    if args.resume and not args.keep:
        p.error("--resume needs --keep DIR (the folder the earlier attempts rendered into)")

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
        resume = args.resume and out.exists()
        cmd += ["generate-movie", str(story), "-o", str(out), "--profile", args.profile, "--quiet"] + ([] if resume else ["--fresh"])
        cmd += ["--keyframes-only"] if args.keyframes_only else []
        ledger, key = Ledger(work / "bench_runs.json"), story.name
        if not resume:
            ledger.data.pop(key, None)
        runs = ledger.data.get(key, [])
        if not (resume and runs and runs[-1]["finished"] and (out / "manifest.json").is_file()):
            first = [True]

            def tick(wall, rss):
                ledger.record(key, wall, rss, False, new=first[0])
                first[0] = False

            wall, rss, code = run_measured(cmd, env, on_tick=tick)
            if code:
                print(f"{minutes:>7g} generate-movie failed (exit {code})")
                return 1
            ledger.record(key, wall, rss, True, new=first[0])
        wall, rss, attempts = ledger.totals(key)
        manifest = json.loads((out / "manifest.json").read_text())
        seconds = sum(s["frames"] for s in manifest["shots"]) / manifest["fps"]
        rows.append((minutes, rss))
        note = f"   ({attempts} attempts, wall summed)" if attempts > 1 else ""
        print(f"{minutes:>7g} {len(manifest['shots']):>6} {seconds:>8.0f} {wall:>8.1f} {seconds / wall:>15.3f} {rss:>13.0f}{note}", flush=True)
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
