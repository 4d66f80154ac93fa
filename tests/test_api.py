"""The Python API (`from moviedreamer import MovieDreamerPipeline, load_story`): the README's example runs as written,
a story may be given as an object, a path, YAML text or a Story, and a call returns the output's paths with frames read
back on demand. Also the small output fixes: the keyframes-only manifest, the storyboard's captions and camera, the
`--help` default."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pipeline_standins
import pytest

STORY = """title: Two Shots
fps: 8
resolution: [64, 64]
seed: 3
characters:
  - {id: mia, name: Mia, description: a girl with a round orange face}
scenes:
  - id: beach
    setting: a sunny beach
    shots:
      - {duration: 1, characters: [mia], action: Mia runs to the right, camera: wide shot}
      - {duration: 1.5, characters: [mia], action: Mia waves, camera: "close-up, slow zoom in"}
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a story given as text is checked from a hidden file in the current folder


def _pipe():
    from moviedreamer import MovieDreamerPipeline

    return MovieDreamerPipeline(pipeline_standins.components())


def test_import_is_cheap_and_exports_the_api():
    code = "import sys, moviedreamer; assert 'torch' not in sys.modules; from moviedreamer import MovieDreamerPipeline, load_story, MovieResult"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False).returncode == 0


def test_readme_python_example_runs(repo, tmp_path, monkeypatch):
    """The README's Python example, run as written from a folder holding the repository's stories/."""
    block = re.search(r"```python\n(.*?)```", (repo / "README.md").read_text(), re.DOTALL)
    assert block, "README.md has no ```python example"
    (tmp_path / "stories").symlink_to(repo / "stories")
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)  # noqa: S102 — the documentation's own code
    result = scope["result"]
    assert result.movie.is_file() and result.manifest.is_file() and all(p.is_file() for p in result.storyboard)
    assert scope["frames"].dtype == np.uint8 and scope["frames"].shape == (32, 128, 128, 3)  # shot 1: 4 s at 8 fps, 128 x 128


def test_a_call_takes_a_story_as_object_path_text_or_story_and_returns_paths_and_frames(tmp_path):
    from moviedreamer import MovieResult, load_story

    path = tmp_path / "story.yaml"
    path.write_text(STORY)
    pipe = _pipe()
    seen = []
    result = pipe(load_story(path), tmp_path / "a", quiet=True, callback=seen.append)
    assert isinstance(result, MovieResult) and len(result) == 2 and result.shot_indices == [0, 1]
    assert result.movie == tmp_path / "a" / "movie.mp4" and result.movie.is_file() and result.manifest.is_file()
    assert [p.name for p in result.storyboard] == ["storyboard.png"] and all(p.is_file() for p in result.clips + result.keyframes)
    assert result.frames(0).shape == (8, 64, 64, 3) and result.frames(1).shape == (12, 64, 64, 3)
    assert result.keyframe(1).shape == (64, 64, 3) and sum(1 for _ in result.iter_frames()) == 20
    assert seen[-1].frames_done == seen[-1].frames_total == 20 and seen[-1].done == pytest.approx(seen[-1].total)
    frames = list(result.iter_frames())
    for given in (str(path), STORY, load_story(path).story):
        out = tmp_path / f"b{len(given) if isinstance(given, str) else 'story'}"
        again = pipe(given, out, quiet=True)
        assert all(np.array_equal(a, b) for a, b in zip(again.iter_frames(), frames, strict=True))  # whatever form it came in
    kept = json.loads((tmp_path / "bstory" / "manifest.json").read_text())["story"]
    assert kept.endswith("story.yaml") and "Two Shots" in Path(kept).read_text()  # text and objects are kept in the folder


def test_bad_story_text_is_one_clear_error_and_writes_nothing(tmp_path):
    from moviedreamer.errors import ScriptError, UserError

    with pytest.raises(ScriptError, match=r"<story text>:\d+:\d+: .*duration"):
        _pipe()(STORY.replace("duration: 1,", "duration: -1,"), tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".moviedreamer-story-*"))
    with pytest.raises(UserError, match="shots: expected"):
        _pipe()(STORY, tmp_path / "out", shots=(1, 5), quiet=True)
    assert not (tmp_path / "out").exists()


def test_keyframes_only_manifest_says_clips_were_not_rendered(tmp_path):
    result = _pipe()(STORY, tmp_path / "out", keyframes_only=True, quiet=True)
    manifest = json.loads(result.manifest.read_text())
    said = [shot["seconds"]["clip"] for shot in manifest["shots"]]
    assert said == ["not rendered (keyframes only)"] * 2 and "reused" not in json.dumps(manifest["shots"])
    assert result.movie is None and result.clips == [] and result.keyframe(0).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="keyframes_only"):
        result.frames(0)


def test_storyboard_shows_camera_and_cuts_long_captions_with_an_ellipsis(tmp_path, monkeypatch):
    from PIL import ImageFont

    from moviedreamer.pipeline import assemble
    from moviedreamer.pipeline.writer import tile_text

    drawn = []
    real = assemble.write_storyboard
    monkeypatch.setattr(assemble, "write_storyboard", lambda tiles, labels, *a, **k: drawn.extend(labels) or real(tiles, labels, *a, **k))
    _pipe()(STORY, tmp_path / "out", keyframes_only=True, quiet=True)
    assert drawn == [("1.1 Mia runs to the right", "wide shot"), ("1.2 Mia waves", "close-up, slow zoom in")]

    font = ImageFont.load_default()
    measure = font.getlength
    action = "1.1 Mia runs to the right past the tall lighthouse while the little dog chases a bright red kite along the sand"
    caption, camera = tile_text((action, "wide shot, slow pan right across the whole harbour at dawn"), measure, 156)
    assert len(caption) == 2 and caption[-1].endswith("…") and camera.startswith("camera: wide shot") and camera.endswith("…")
    words = {w.strip(",") for w in (action + " wide shot, slow pan right across the whole harbour at dawn").split()}
    for line in caption + [camera.removeprefix("camera: ")]:
        assert measure(line) <= 156
        assert all(w.strip(",") in words for w in line.removesuffix("…").split())  # whole words only: nothing cut mid-word
    short, cam = tile_text(("1.2 Mia waves", "close-up"), measure, 156)
    assert short == ["1.2 Mia waves"] and cam == "camera: close-up"
    assert tile_text("x" * 80, measure, 60)[0][0].endswith("…")  # a single word wider than the tile is cut inside it


def test_generate_help_states_the_profile_default(repo, capsys):
    from moviedreamer.cli import main
    from moviedreamer.registry import Registry

    config = json.loads((Registry.load(None).path("keyframe_tokenizer") / "config.json").read_text())
    with pytest.raises(SystemExit):
        main(["generate-movie", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"{config['decoder']['candidates']} with the default profile" in text and "toy: 8" not in text


def test_from_pretrained_takes_a_profile_folder(tmp_path):
    from moviedreamer import MovieDreamerPipeline
    from moviedreamer.errors import UserError
    from moviedreamer.testing.pipeline import make_tiny_profile

    make_tiny_profile(tmp_path / "profile")
    pipe = MovieDreamerPipeline.from_pretrained(tmp_path / "profile", device="cpu", keyframe_candidates=1, clip_candidates=1)
    result = pipe(STORY, tmp_path / "out", keyframes_only=True, quiet=True)
    assert result.keyframe(0).shape == (64, 64, 3)
    with pytest.raises(UserError, match="profile.yaml"):
        MovieDreamerPipeline.from_pretrained(tmp_path / "out")
    with pytest.raises(UserError, match="clip_candidates"):
        MovieDreamerPipeline.from_pretrained(tmp_path / "profile", clip_candidates=0)
