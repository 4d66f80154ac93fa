"""The video referee (eval/referee.py): the Fréchet distance, and `moviedreamer eval` on a truth movie, its slideshow
(each shot's first frame repeated) and noise: truth reads as its script, the slideshow does not."""

from pathlib import Path

import numpy as np
import pytest

from moviedreamer.eval.referee import frechet_distance, quarters

ACTION_JUDGE = Path(__file__).resolve().parents[1] / "moviedreamer" / "weights" / "toy" / "action_judge" / "model.safetensors"


def test_frechet_distance_is_zero_for_one_distribution_and_grows_with_a_shift_and_a_spread():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted, wider = a + 0.5, a * 2.0
    assert frechet_distance(a, shifted) == pytest.approx(4 * 0.25, rel=1e-6)  # |Δμ|² and equal covariances
    assert frechet_distance(a, wider) > 1.0 and frechet_distance(a, rng.normal(size=(400, 4))) < 0.2
    assert frechet_distance(a[:5], a[5:10], shrink=0.5) >= 0.0  # few rows: finite, non-negative


def test_quarters_cover_short_and_long_clips():
    assert quarters(1) == (slice(0, 1), slice(0, 1))
    assert quarters(16) == (slice(0, 4), slice(12, 16))


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    from moviedreamer.media import ClipWriter, read_frames
    from moviedreamer.script import load_story
    from moviedreamer.script.timeline import build_timeline
    from moviedreamer.script.write import write_story
    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.story import generate_story, read_story_params

    if not ACTION_JUDGE.is_file():
        pytest.skip("the toy action judge's weights are not committed")
    tmp = tmp_path_factory.mktemp("referee")
    story = write_story(generate_story(0.5, seed=21, resolution=(128, 128)), tmp / "story.yaml")
    loaded = load_story(story)
    timeline = build_timeline(loaded.story)
    with ClipWriter(tmp / "truth.mp4", 8, 128, 128) as w:
        for p, shot in zip(read_story_params(loaded), timeline):
            for f in range(shot.n_frames):
                w.write(render_frame(p, f, 8, (128, 128)).image)
    frames = list(read_frames(tmp / "truth.mp4"))
    with ClipWriter(tmp / "slideshow.mp4", 8, 128, 128) as w:
        for shot in timeline:
            for _ in range(shot.n_frames):
                w.write(frames[shot.start_frame])
    return story, tmp


@pytest.mark.slow
def test_eval_reads_the_truth_and_fails_its_slideshow(movies):
    from moviedreamer.eval.run import evaluate

    story, tmp = movies
    truth = evaluate(tmp / "truth.mp4", story).metrics["referee"]
    slideshow = evaluate(tmp / "slideshow.mp4", story).metrics["referee"]
    assert truth["action_accuracy"] >= 0.9 and truth["camera_move_accuracy"] >= 0.9
    assert slideshow["action_accuracy"] <= truth["standing_shots"] / truth["shots"] + 0.1  # a still clip is right only where they stand
    assert slideshow["frame_distance"] > 2 * truth["frame_distance_floor"] > truth["frame_distance"]
