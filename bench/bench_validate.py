"""How long `moviedreamer validate` takes on a 2,000-shot story (target: under 2 s, process start included)."""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

N_SHOTS, SHOTS_PER_SCENE = 2000, 20


def write_story(path: Path) -> None:
    chars = [{"id": f"c{i}", "name": f"C{i}", "description": f"a person number {i} with a round face and a red hat"} for i in range(12)]
    scenes = []
    for s in range(N_SHOTS // SHOTS_PER_SCENE):
        shots = [
            {"duration": 3 + (t % 4), "characters": [f"c{(s + t) % 12}", f"c{(s + t + 1) % 12}"], "action": f"C{t % 12} walks to the left and waves", "camera": "wide shot, slow pan right"}
            for t in range(SHOTS_PER_SCENE)
        ]
        scenes.append({"id": f"scene{s}", "setting": "a sunny beach with blue sea and yellow sand", "plot": "a long day at the beach", "shots": shots})
    path.write_text(yaml.safe_dump({"title": "Bench", "fps": 8, "characters": chars, "scenes": scenes}, sort_keys=False))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.yaml"
        write_story(path)
        size_kb = path.stat().st_size / 1024
        from moviedreamer.script import load_story

        t0 = time.perf_counter()
        loaded = load_story(path)
        in_process = time.perf_counter() - t0
        n = sum(len(s.shots) for s in loaded.story.scenes)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "moviedreamer", "validate", "-q", str(path)], capture_output=True, text=True)
            runs.append(time.perf_counter() - t0)
            assert proc.returncode == 0, proc.stderr
        print(f"validate {n} shots ({size_kb:.0f} KiB): load_story {in_process:.3f} s in-process; "
              f"CLI end-to-end (process start included) best {min(runs):.3f} s, median {sorted(runs)[1]:.3f} s (target < 2 s)")


if __name__ == "__main__":
    main()
