"""Resume, edits, kills, ranks and outputs of generate-movie, with deterministic stand-in components."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from moviedreamer.pipeline.movie import MovieDreamerPipeline, parse_shots
from moviedreamer.media import read_frames
from moviedreamer.script import load_story

sys.path.insert(0, str(Path(__file__).parent))
import pipeline_standins  # noqa: E402

DOUBLES = Path(__file__).parent / "pipeline_standins.py"


def _story(tmp_path, n_scenes=2, shots=3, duration=1.0, edit=None, continuous_at=None):
    lines = ["title: Test Movie", "fps: 8", "resolution: [64, 64]", "seed: 3", "characters:",
             "  - {id: mia, name: Mia, description: a girl with a round orange face}", "scenes:"]
    k = 0
    for s in range(n_scenes):
        lines += [f"  - id: scene{s}", "    setting: a sunny beach", "    shots:"]
        for t in range(shots):
            action = edit[1] if edit and edit[0] == k else f"Mia walks step {k}"
            extra = ", transition: continuous" if continuous_at == k else ""
            lines.append(f"      - {{duration: {duration}, characters: [mia], action: {action}, camera: wide shot{extra}}}")
            k += 1
    path = tmp_path / "story.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(story, out, **kw):
    return MovieDreamerPipeline(pipeline_standins.components())(load_story(story), out, quiet=True, **kw)


def _movie(out):
    return np.stack(list(read_frames(out / "movie.mp4")))


def test_outputs_are_complete(tmp_path):
    story = _story(tmp_path, duration=1.5)
    out = tmp_path / "out"
    report = _run(story, out)
    assert sorted(report.rendered["clip"]) == list(range(6))
    frames = _movie(out)
    assert frames.shape == (6 * 12, 64, 64, 3)  # 1.5 s at 8 fps = 12 frames per shot
    assert (out / "storyboard.png").is_file() and len(list((out / "shots").glob("*.mp4"))) == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["frames"] == 72 and manifest["fps"] == 8 and len(manifest["shots"]) == 6
    assert all(isinstance(s["seconds"]["clip"], float) for s in manifest["shots"])
    assert not list(out.rglob("*.partial*"))


def test_rerun_reuses_everything_and_is_identical(tmp_path):
    story, out = _story(tmp_path), tmp_path / "out"
    _run(story, out)
    first = _movie(out)
    report = _run(story, out)
    assert report.rendered == {"plan": [], "keyframe": [], "clip": []}
    assert report.reused == {"plan": 6, "keyframe": 6, "clip": 6}
    np.testing.assert_array_equal(_movie(out), first)


def test_editing_a_shot_rerenders_only_what_depends_on_it(tmp_path):
    out = tmp_path / "out"
    _run(_story(tmp_path), out)
    report = _run(_story(tmp_path, edit=(3, "Mia jumps high")), out)
    assert report.rendered["plan"] == [3, 4, 5]  # the AR history changes from the edited shot on
    assert sorted(report.rendered["keyframe"]) == [3, 4, 5] and sorted(report.rendered["clip"]) == [3, 4, 5]
    assert report.reused["clip"] == 3
    assert len(list((out / "state" / "clips").glob("*.mp4"))) == 9  # the old units stay until asked for
    from moviedreamer.pipeline.cleanup import clean_folder

    assert len(clean_folder(out).removed) == 9  # the old plan, keyframe and clip of shots 3, 4, 5
    assert len(list((out / "state" / "clips").glob("*.mp4"))) == 6 and _run(_story(tmp_path, edit=(3, "Mia jumps high")), out).rendered["clip"] == []


def test_continuous_shot_ends_on_next_keyframe(tmp_path):
    out = tmp_path / "out"
    _run(_story(tmp_path, continuous_at=1), out)
    frames = _movie(out)
    # the stand-in clip renderer puts the end frame last: shot 1's last frame == shot 2's first (its keyframe)
    np.testing.assert_allclose(frames[15].astype(int), frames[16].astype(int), atol=12)


def test_shot_range_and_keyframes_only(tmp_path):
    story, out = _story(tmp_path), tmp_path / "out"
    report = _run(story, out, shots=parse_shots("2:4", 6), keyframes_only=True)
    assert sorted(report.rendered["keyframe"]) == [2, 3] and report.rendered["clip"] == []
    assert report.rendered["plan"] == [0, 1, 2, 3]  # the AR plan needs the history before the range
    assert report.preview and report.storyboard == [out / "preview" / "storyboard.png"] and report.storyboard[0].is_file()
    assert not (out / "movie.mp4").exists() and not (out / "preview" / "movie.mp4").exists()
    with pytest.raises(Exception, match="expected 0 ≤ A < B ≤ 6"):
        parse_shots("4:9", 6)


def test_killed_runs_resume_to_the_same_movie(tmp_path):
    story = _story(tmp_path, n_scenes=2, shots=4, duration=1.0)
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, str(DOUBLES), str(story), str(reference)], check=True, timeout=120)
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, str(DOUBLES), str(story), str(out), "0.01"], stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.8, 2.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(30)
    final = subprocess.run([sys.executable, str(DOUBLES), str(story), str(out)], capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert kills >= 1
    np.testing.assert_array_equal(_movie(out), _movie(reference))


@pytest.mark.slow
def test_two_ranks_make_the_same_movie(tmp_path):
    story = _story(tmp_path, n_scenes=2, shots=3)
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(DOUBLES), str(story), str(one)], check=True, timeout=120)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000), str(DOUBLES), str(story), str(two)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(_movie(two), _movie(one))
    manifest = json.loads((two / "manifest.json").read_text())
    assert len(manifest["shots"]) == 6
