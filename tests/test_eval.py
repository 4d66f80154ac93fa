"""The evaluation suite: formulas on known inputs, and the ordering ground truth > shuffled shots."""

import json

import numpy as np
import pytest

from moviedreamer import metrics
from moviedreamer.toyworld.judge import DEFAULT_DIR


def test_flicker_formula():
    still = np.full((5, 8, 8, 3), 100, np.uint8)
    assert metrics.flicker_score(still) == 1.0
    alternating = np.stack([np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)] * 2)
    assert metrics.flicker_score(alternating) == pytest.approx(0.0)
    half = np.stack([np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 51, np.uint8)])
    assert metrics.flicker_score(half) == pytest.approx(1 - 51 / 255)


def test_dis_motion_tracks_a_known_translation():
    from PIL import Image

    rng = np.random.default_rng(0)
    texture = (rng.random((96, 140, 3)) * 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(texture).resize((280, 192), Image.BILINEAR)).copy()  # smooth, trackable texture
    frames = np.stack([texture[20:84, 3 * i : 3 * i + 96] for i in range(6)])  # a 3 px/frame pan
    assert metrics.motion_magnitude(frames) == pytest.approx(3.0, rel=0.15)
    assert metrics.motion_magnitude(frames[:1].repeat(4, 0)) < 0.05


def test_consistency_and_clip_score():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    same = metrics.consistency([a, a, a], reference=a)
    assert same["st"] == pytest.approx(1) and same["lt"] == pytest.approx(1) and same["ref"] == pytest.approx(1)
    mixed = metrics.consistency([a, b, a])
    assert mixed["st"] == pytest.approx(0) and mixed["lt"] == pytest.approx(1 / 3)
    assert metrics.consistency([])["st"] is None
    assert metrics.clip_score(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]])) == pytest.approx(100)
    assert metrics.clip_score(np.array([[1.0, 0.0]]), np.array([[-1.0, 0.0]])) == 0


def _render(story_path, params, out, fps=8, size=(128, 128)):
    from moviedreamer.media import ClipWriter
    from moviedreamer.script.timeline import frames_for
    from moviedreamer.toyworld.render import render_frame

    with ClipWriter(out, fps, *size) as w:
        for p in params:
            for f in range(frames_for(p.duration, fps)):
                w.write(render_frame(p, f, fps, size).image)
    return out


def test_ground_truth_scores_above_shuffled_shots(tmp_path, run_cli, repo):
    from dataclasses import replace

    from moviedreamer.script import load_story
    from moviedreamer.toyworld.story import read_story_params

    story = repo / "stories/toy/market_day.yaml"
    params = read_story_params(load_story(story))
    truth = _render(story, params, tmp_path / "truth.mp4")
    order = [3, 0, 6, 1, 5, 2, 4]
    # the shuffled movie plays other shots in each slot of the story's timeline (durations kept)
    shuffled = _render(story, [replace(params[j], duration=params[i].duration) for i, j in enumerate(order)], tmp_path / "shuffled.mp4")
    code, out, err = run_cli("eval", truth, "--story", story, "--compare", shuffled, "-o", tmp_path / "eval")
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    gt, sh = report["truth.mp4"]["metrics"], report["shuffled.mp4"]["metrics"]
    assert 0.95 < gt["flicker"] <= 1.0 and gt["motion_px_per_frame"] > 0.2
    assert 0 < gt["clip_score"] <= 100, report["truth.mp4"]["notes"]  # decoded frames reach the CLIP encoder
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "truth.mp4" in html and "shuffled.mp4" in html and (tmp_path / "eval" / "motion.png").is_file()
    if (DEFAULT_DIR / "model.safetensors").is_file():
        assert gt["judge"]["scene_and_characters"] >= 0.85
        assert gt["judge"]["scene_and_characters"] > sh["judge"]["scene_and_characters"] + 0.3


def test_eval_errors_are_clear(tmp_path, run_cli, repo):
    code, _, err = run_cli("eval", tmp_path / "nothing.mp4", "--story", repo / "stories/toy/market_day.yaml")
    assert code == 2 and "expected a movie" in err
    code, _, err = run_cli("eval", tmp_path, "--story", repo / "stories/toy/market_day.yaml")
    assert code == 2 and "movie.mp4" in err


def test_eval_on_a_missing_folder_says_it_is_missing(tmp_path, run_cli):
    code, _, err = run_cli("eval", tmp_path / "no_such_run")
    assert code == 2 and "no such file or folder" in err and "--story" not in err and len(err.strip().splitlines()) == 1


def test_report_says_na_for_empty_face_charts_and_keeps_notes_whole(tmp_path):
    import html

    from moviedreamer.errors import Problem, ScriptError
    from moviedreamer.eval.report import write_report
    from moviedreamer.errors import first_line

    long = "expected a setting the toy world can draw (beach, forest, city, night, snow, room …), found 'a harbour at dawn under a stormy sky'"
    error = ScriptError([Problem("story.yaml", 12, 14, "scenes[0].setting", long), Problem("story.yaml", 20, 3, "scenes[1].setting", "x"),
                         Problem("story.yaml", 30, 3, "scenes[2].setting", "y")])
    note = f"judge: not applicable ({first_line(error)})"
    assert long in note and note.endswith("(and 2 more lines))")  # the whole first problem, never cut inside a word
    solo_once = {"st": None, "lt": None, "ref": 0.9, "appearances": 1}
    ev = {"movie": "m.mp4", "metrics": {"flicker": 0.99, "motion_px_per_frame": 0.5, "consistency": {"mia": solo_once}},
          "per_shot": [{"index": 0, "flicker": 0.99, "motion": 0.5}], "notes": [note]}
    write_report(tmp_path, {"m.mp4": ev})
    page = (tmp_path / "report.html").read_text()
    for kind in ("ST", "LT"):
        assert f"<b>face consistency {kind} per character (cosine)</b>: n/a (" in page
    assert not (tmp_path / "consistency_st.png").exists() and not (tmp_path / "consistency_lt.png").exists()
    assert html.escape(note) in page
