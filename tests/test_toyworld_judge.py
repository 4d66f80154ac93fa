"""The committed judge on fresh renders (seeds never used in training), with bounds below the acceptance
figures measured on 2,000 renders (docs/toyworld.md) but still meaningful."""

import numpy as np

from moviedreamer.toyworld.judge import evaluate_judge, load_judge




def test_judge_accuracy_on_fresh_renders():
    scores = evaluate_judge(load_judge(), samples=300, seed=20_000_000)
    assert scores["scene"] >= 0.96, scores
    assert scores["characters_exact"] >= 0.88, scores
    assert scores["framing"] >= 0.93, scores


def test_judge_is_not_fooled_by_a_blank_frame():
    pred = load_judge().predict(np.full((1, 128, 128, 3), 128, np.uint8))[0]
    assert pred["characters"] == ()


def test_judge_cli_on_images_and_movie(tmp_path, run_cli):
    from PIL import Image

    from moviedreamer.toyworld.render import render_frame
    from moviedreamer.toyworld.world import ShotParams

    shot = ShotParams("snow", ("mia", "tom"), "wave", None, "medium", "static", 3.0, 4)
    Image.fromarray(render_frame(shot, 0).image).save(tmp_path / "f.png")
    code, out, _ = run_cli("toyworld", "judge", tmp_path / "f.png")
    assert code == 0 and "scene=snow" in out and "mia" in out and "tom" in out
    code, _, err = run_cli("toyworld", "judge", tmp_path / "missing.png")
    assert code == 2 and "expected an image" in err
