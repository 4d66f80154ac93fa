"""The committed frame judge on fresh renders (seeds never used in training), with bounds below the acceptance
figures measured on 2,000 renders (docs/toyworld.md) but still meaningful."""

import numpy as np

from moviedreamer.toyworld.judge import load_judge
from moviedreamer.toyworld.look_judge_data import evaluate_look_judge


def test_judge_reads_scenes_characters_and_looks_of_fresh_renders():
    judge = load_judge()
    composed = evaluate_look_judge(judge, samples=150, seed=20_000_000, composed=1.0)
    catalogue = evaluate_look_judge(judge, samples=150, seed=20_000_000, composed=0.0)
    for scores in (composed, catalogue):
        assert scores["scene"] >= 0.96 and scores["framing"] >= 0.93 and scores["count"] >= 0.95, scores
        assert scores["characters_cast"] >= 0.93 and scores["attributes"] >= 0.93, scores


def test_judge_is_not_fooled_by_a_blank_frame():
    pred = load_judge().predict(np.full((1, 128, 128, 3), 128, np.uint8))[0]
    assert pred["characters"] == () and pred["looks"] == []


def test_an_older_judge_folder_is_a_clear_error(tmp_path):
    import json

    import pytest
    import torch

    from moviedreamer.errors import CheckpointError
    from moviedreamer.safeio import save_safetensors

    (tmp_path / "config.json").write_text(json.dumps({"width": 8, "n_scenes": 8, "n_characters": 12, "n_framings": 3}))
    save_safetensors({"w": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="expected the compositional frame judge"):
        load_judge(tmp_path)


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
